// Test Worker for test_webhooks.py: runs capkit.verifyWebhook on workerd
// against a replayed delivery.
//
//   POST /verify   the delivery's raw body and webhook-* headers, plus
//                  x-test-secrets (space-separated "whsec_...") and
//                  optionally x-test-now-ms (the clock verifyWebhook uses:
//                  the delivery's arrival time, so a replay is judged as the
//                  delivery was).
//   -> 200 {"ok":true,"event":{...}} or 200 {"ok":false,"code","status","message"}
import { CapWebhookError, verifyWebhook } from "./capkit.js";

export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === "/health") return Response.json({ status: "ok" });
    if (url.pathname !== "/verify" || request.method !== "POST") return new Response("no", { status: 404 });
    const secrets = (request.headers.get("x-test-secrets") ?? "").split(" ").filter(Boolean);
    const nowMs = request.headers.get("x-test-now-ms");
    try {
      const event = await verifyWebhook(request, secrets.length === 1 ? secrets[0] : secrets,
        nowMs === null ? {} : { now: Number(nowMs) });
      return Response.json({ ok: true, event });
    } catch (e) {
      if (!(e instanceof CapWebhookError)) throw e;
      return Response.json({ ok: false, code: e.code, status: e.status, message: e.message });
    }
  },
};
