// Test Worker for test_webhooks.py: a Cloudflare Workflow that sleeps in
// step.waitForEvent until the example receiver (packaging/cloudflare/
// example/receiver.js) passes it a job's final webhook, as the Workflow in
// docs/API.md ("Receiving webhooks in a Worker") does.  It runs on workerd's
// bundled Workflows engine.
//
//   POST /create?id=<instance id>   starts an instance
//   GET  /status?id=<instance id>   its status(): {status, output, error}
import { WorkflowEntrypoint } from "cloudflare:workers";

export class WaitFlow extends WorkflowEntrypoint {
  async run(event, step) {
    const ev = await step.waitForEvent("cap result", { type: "cap-job", timeout: "10 minutes" });
    const { type, timestamp, data } = ev.payload;
    return {
      type, timestamp, job_id: data?.job_id ?? null, status: data?.status ?? null, result: data?.result ?? null,
    };
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const id = url.searchParams.get("id");
    if (url.pathname === "/health") return Response.json({ status: "ok" });
    if (url.pathname === "/create" && request.method === "POST") {
      const instance = await env.FLOW.create({ id });
      return Response.json({ id: instance.id });
    }
    if (url.pathname === "/status") return Response.json(await (await env.FLOW.get(id)).status());
    return new Response("no such route", { status: 404 });
  },
};
