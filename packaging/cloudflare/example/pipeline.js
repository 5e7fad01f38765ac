// Example pipeline Worker: one step of a media pipeline that hands the
// heavy work to whichever cap-server the registry says is least loaded.
//
//   POST /render {"input_key","output_key"|"output_prefix","preset"[,"wait","idempotency_key"]}
//   POST /probe  {"input_key"[,"wait","idempotency_key"]}
//
// Both answer the job's result JSON ({r2_key, bytes, duration_ms, ...} or
// {probe, duration_ms, ...}), or {"error","code","provider"} with the
// status below.  Callers authenticate with PIPELINE_TOKEN: without it,
// anyone who finds the URL could spend the fleet's GPU time.

import { CapError, createCapKit } from "../capkit.js";

const json = (status, body) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", "Cache-Control": "no-store" },
  });

async function authorized(request, expected) {
  const m = /^Bearer[ ]+(\S+)$/i.exec(request.headers.get("Authorization") ?? "");
  if (!m) return false;
  const enc = new TextEncoder();
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", enc.encode(m[1])),
    crypto.subtle.digest("SHA-256", enc.encode(expected)),
  ]);
  return crypto.subtle.timingSafeEqual(a, b);
}

function kitFor(env) {
  return createCapKit({
    // A service binding reaches the registry Worker without a public
    // route; the host name in the URL is then ignored.
    registryUrl: env.REGISTRY_URL || "https://registry.internal",
    registryFetch: env.REGISTRY,
    resolveToken: env.RESOLVE_TOKEN,
    capabilityToken: env.CAPABILITY_TOKEN,
    // Funnel serves HTTPS; plain http is only for a local test bed.
    scheme: env.PROVIDER_SCHEME || "https",
    pollWaitS: Number(env.POLL_WAIT_S || 60),
  });
}

// The request fields this step accepts; anything else is refused here
// rather than passed on, so the pipeline's own API stays narrow.
function pick(body, fields) {
  const out = {};
  for (const f of fields) if (body[f] !== undefined) out[f] = body[f];
  return out;
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/health") return json(200, { status: "ok" });
    const capability = { "/render": "ffmpeg-render", "/probe": "ffprobe" }[url.pathname];
    if (!capability) return json(404, { error: "No such route", code: "not_found" });
    if (request.method !== "POST") return json(405, { error: "Use POST", code: "method_not_allowed" });
    if (!env.PIPELINE_TOKEN || !env.CAPABILITY_TOKEN || !env.RESOLVE_TOKEN || !(env.REGISTRY || env.REGISTRY_URL)) {
      return json(503, { error: "The pipeline is not configured", code: "not_configured" });
    }
    if (!(await authorized(request, env.PIPELINE_TOKEN))) {
      return json(401, { error: "Missing or invalid bearer token", code: "unauthorized" });
    }
    let body;
    try {
      body = await request.json();
    } catch {
      return json(400, { error: "The body is not JSON", code: "invalid_json" });
    }
    // output_key for a preset that writes one object, output_prefix for a
    // ladder (hls-ladder, ...) that writes a package of many.
    const fields = capability === "ffprobe" ? ["input_key", "wait"] : ["input_key", "output_key", "output_prefix", "preset", "wait"];
    const job = { capability, ...pick(body ?? {}, fields) };
    try {
      // A caller that may retry this request sends its own idempotency
      // key, so that its retry joins the job instead of starting another.
      const result = await kitFor(env).exec(job, {
        idempotencyKey: body?.idempotency_key,
        // A long job: where it runs, for the logs (a real pipeline could
        // store this and poll later from a Queue consumer instead).
        onAccepted: (a) => console.log(`cap job ${a.job_id} accepted by ${a.provider}:${a.port}`),
      });
      return json(200, result);
    } catch (e) {
      if (!(e instanceof CapError)) throw e;
      console.error(`cap job failed: ${e.code} (${e.status}) on ${e.provider ?? "no provider"}`);
      // 4xx are the caller's to fix (bad key, unknown preset): pass them
      // on.  Anything else is the fleet's problem: 503 when a retry later
      // may work, else 502.
      const status = e.status >= 400 && e.status < 500 && !e.retryable ? e.status : e.retryable ? 503 : 502;
      return json(status, { error: e.message, code: e.code, provider: e.provider, retryable: e.retryable });
    }
  },
};
