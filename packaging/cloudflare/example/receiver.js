// Example webhook receiver Worker: the callback_url a pipeline gives
// cap-server, so that results are pushed instead of polled.
//
//   POST /cap/webhook[?instance=<Workflow instance id>]
//        a delivery from cap-server (Standard Webhooks, signed per token).
//        Verified with capkit.verifyWebhook, stored in the job's Durable
//        Object, and a job's final event (job.succeeded, job.failed,
//        job.canceled) is passed to the Workflow instance named in the query
//        as an event of type "cap-job" when the CAP_WORKFLOW binding exists.
//        Answers 200 {"ok":true,"duplicate":false|true} once stored.
//   GET  /cap/jobs/{job_id}   (Bearer READ_TOKEN)
//        what arrived for a job: {"job_id","status","job","events":[...]}.
//   GET  /health
//
// cap-server retries a delivery until it gets a 2xx (or 410), with the same
// webhook-id each time, so a delivery may arrive more than once: the Durable
// Object keeps each webhook-id once, and the Workflow hears of it once.
//
// Configuration: CAP_WEBHOOK_SECRETS (secret; "whsec_..." as in cap-server's
// webhook_secrets_file line for the token, two space-separated during a
// rotation), JOBS (Durable Object namespace of CapJobDO), READ_TOKEN
// (secret, optional: without it GET /cap/jobs is off), CAP_WORKFLOW
// (optional Workflow binding), RETAIN_DAYS (how long a job's events are
// kept; default 7).

import { DurableObject } from "cloudflare:workers";
import { CapWebhookError, verifyWebhook } from "../capkit.js";

// A job object is a few KiB (a ladder's with its renditions somewhat more);
// anything much larger is not from cap-server and is refused unread.
const MAX_BODY = 1024 * 1024;
const FINAL = new Set(["job.succeeded", "job.failed", "job.canceled"]);
const JOB_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
// Workflow instance ids: letters, digits, "-" and "_", at most 100.
const INSTANCE_RE = /^[A-Za-z0-9_-]{1,100}$/;

const json = (status, body) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", "Cache-Control": "no-store" },
  });

async function authorized(request, expected) {
  const m = /^Bearer[ ]+(\S+)$/i.exec(request.headers.get("Authorization") ?? "");
  if (!m || !expected) return false;
  const enc = new TextEncoder();
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", enc.encode(m[1])),
    crypto.subtle.digest("SHA-256", enc.encode(expected)),
  ]);
  return crypto.subtle.timingSafeEqual(a, b);
}

// One Durable Object per job (idFromName(job_id)): its events, each
// webhook-id once, in SQLite.  Deliveries of one job are few, so a table
// per object stays tiny; an alarm deletes everything RETAIN_DAYS after the
// first event.
export class CapJobDO extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.retainMs = (Number(env.RETAIN_DAYS) > 0 ? Number(env.RETAIN_DAYS) : 7) * 86400 * 1000;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS events (
      webhook_id  TEXT PRIMARY KEY,
      type        TEXT NOT NULL,
      event_ts    TEXT,
      received_at INTEGER NOT NULL,
      body        TEXT NOT NULL,
      forwarded   INTEGER NOT NULL DEFAULT 0)`);
  }

  // Stores the event unless this webhook-id is stored already.  Nothing
  // awaits between the look-up and the insert, so two deliveries of one id
  // arriving at once cannot both insert.  Returns {duplicate, forwarded}.
  async record(webhookId, event) {
    const row = this.sql.exec("SELECT forwarded FROM events WHERE webhook_id = ?", webhookId).toArray()[0];
    if (row) return { duplicate: true, forwarded: row.forwarded === 1 };
    this.sql.exec(
      "INSERT INTO events (webhook_id, type, event_ts, received_at, body) VALUES (?, ?, ?, ?, ?)",
      webhookId, event.type, String(event.timestamp ?? ""), Date.now(), JSON.stringify(event),
    );
    if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(Date.now() + this.retainMs);
    return { duplicate: false, forwarded: false };
  }

  async markForwarded(webhookId) {
    this.sql.exec("UPDATE events SET forwarded = 1 WHERE webhook_id = ?", webhookId);
  }

  // The job as last reported: a final event wins over earlier ones whatever
  // order the deliveries arrived in (a retried job.progress may come after
  // job.succeeded); among the others the latest event timestamp wins.
  async state() {
    const rows = this.sql
      .exec("SELECT webhook_id, type, event_ts, received_at, body FROM events ORDER BY event_ts, received_at")
      .toArray();
    if (rows.length === 0) return null;
    const last = rows.filter((r) => FINAL.has(r.type)).pop() ?? rows[rows.length - 1];
    const job = JSON.parse(last.body).data ?? null;
    return {
      job_id: job?.job_id ?? null,
      status: job?.status ?? null,
      job,
      events: rows.map((r) => ({
        webhook_id: r.webhook_id,
        type: r.type,
        timestamp: r.event_ts,
        received_at: new Date(r.received_at).toISOString(),
      })),
    };
  }

  async alarm() {
    await this.ctx.storage.deleteAll();
  }
}

async function receive(request, env, url) {
  if (request.method !== "POST") return json(405, { error: "Use POST", code: "method_not_allowed" });
  const secrets = (env.CAP_WEBHOOK_SECRETS ?? "").split(/\s+/).filter(Boolean);
  if (secrets.length === 0 || !env.JOBS) {
    return json(503, { error: "The receiver is not configured", code: "not_configured" });
  }
  const instance = url.searchParams.get("instance");
  if (instance !== null && !INSTANCE_RE.test(instance)) {
    return json(400, { error: "instance is not a Workflow instance id", code: "bad_request" });
  }
  if (Number(request.headers.get("Content-Length") ?? 0) > MAX_BODY) {
    return json(413, { error: "Body too large", code: "body_too_large" });
  }
  let event;
  try {
    event = await verifyWebhook(request, secrets);
  } catch (e) {
    if (!(e instanceof CapWebhookError)) throw e;
    // Any 4xx but 410 makes cap-server retry with backoff: right for a
    // secret being rotated here before there.  The sender learns nothing
    // beyond the code.
    if (e.code === "bad_secret") console.error("receiver: CAP_WEBHOOK_SECRETS is not whsec_<base64>");
    return json(e.status, { error: e.message, code: e.code });
  }
  const webhookId = request.headers.get("webhook-id");
  const jobId = event.data?.job_id;
  if (typeof jobId !== "string" || !JOB_ID_RE.test(jobId)) {
    return json(400, { error: "The event carries no job_id", code: "bad_payload" });
  }
  const job = env.JOBS.get(env.JOBS.idFromName(jobId));
  const { duplicate, forwarded } = await job.record(webhookId, event);
  // A final event goes to the Workflow waiting for it, once: a retried
  // delivery of an event already passed on is only acknowledged.  When
  // sendEvent fails the answer is 503, so cap-server delivers it again.
  if (FINAL.has(event.type) && instance && env.CAP_WORKFLOW && !forwarded) {
    try {
      const flow = await env.CAP_WORKFLOW.get(instance);
      await flow.sendEvent({ type: "cap-job", payload: event });
    } catch (e) {
      console.error(`receiver: Workflow instance ${instance} did not take ${webhookId}: ${e?.message ?? e}`);
      return json(503, { error: "The Workflow did not take the event", code: "workflow_unavailable" });
    }
    await job.markForwarded(webhookId);
  }
  return json(200, { ok: true, duplicate });
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/health") return json(200, { status: "ok" });
    if (url.pathname === "/cap/webhook") return receive(request, env, url);
    const m = /^\/cap\/jobs\/([^/]+)$/.exec(url.pathname);
    if (!m) return json(404, { error: "No such route", code: "not_found" });
    if (request.method !== "GET") return json(405, { error: "Use GET", code: "method_not_allowed" });
    if (!env.READ_TOKEN || !(await authorized(request, env.READ_TOKEN))) {
      return json(401, { error: "Missing or invalid bearer token", code: "unauthorized" });
    }
    if (!JOB_ID_RE.test(m[1])) return json(404, { error: "No such job", code: "job_not_found" });
    const state = await env.JOBS.get(env.JOBS.idFromName(m[1])).state();
    return state ? json(200, state) : json(404, { error: "Nothing received for this job", code: "job_not_found" });
  },
};
