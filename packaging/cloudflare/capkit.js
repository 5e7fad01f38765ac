// capkit: runs cap-server jobs from a Cloudflare Worker.
//
// It asks the capability registry for live providers (least loaded first),
// sends POST /exec to the best one, long-polls when the job outlives one
// response, and moves to another provider when one cannot take the job
// (draining, overloaded, unreachable).  Every attempt of one exec() call
// carries the same Idempotency-Key, so a retry after a lost response joins
// the job it already started instead of rendering twice.
//
// What happens to each answer of POST /exec:
//   200               the result is returned.
//   202 + Location    GET <Location>?wait=pollWaitS until the job ends:
//                     succeeded -> the result; failed/canceled -> CapError.
//   429 rate_limited  wait Retry-After (at most maxRetryAfterS), same provider.
//   429 queue_full    the next provider; the same one after Retry-After when
//                     it was the last.
//   503 draining, too_many_jobs, 422 preset_unavailable, 500 internal, a
//   network error, or a 5xx without cap-server's JSON (a proxy in front):
//                     the next provider, this one excluded; when the list is
//                     used up, resolve again (after a growing pause once no
//                     provider is left).  At most maxAttempts POSTs in all.
//   anything else     CapError at once: a 4xx is the request's fault and a
//                     job that failed (ffmpeg_failed, timeout, storage_*)
//                     would fail the same way elsewhere.
//
// verifyWebhook (at the end) checks the signed webhooks cap-server sends to
// a callback_url.
//
// No dependencies; runs on Workers (workerd) and Node 20+.

/** An error from the registry, a provider or a job. */
export class CapError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code?: string, provider?: string|null, retryable?: boolean,
   *          job?: object|null, body?: object|null, cause?: unknown}} [info]
   */
  constructor(message, info = {}) {
    super(message, info.cause === undefined ? undefined : { cause: info.cause });
    this.name = "CapError";
    /** HTTP status of the answer that ended the call (0: no answer). */
    this.status = info.status ?? 0;
    /** Machine-readable code: cap-server's or the registry's `code`, or one of capkit's own. */
    this.code = info.code ?? "error";
    /** `host:port` of the provider that answered, when one did. */
    this.provider = info.provider ?? null;
    /** Whether trying again later (with a new exec call) may succeed. */
    this.retryable = info.retryable ?? false;
    /** The job object, when the job itself failed or was canceled. */
    this.job = info.job ?? null;
    /** The parsed error body, when there was one. */
    this.body = info.body ?? null;
  }
}

// Answers that say "this provider cannot take the job now" rather than
// "this job is wrong": another provider may well succeed.
const FAILOVER_CODES = new Set([
  "draining", "too_many_jobs", "too_many_connections", "preset_unavailable", "internal", "request_timeout",
]);
// Job outcomes that a later attempt could change (with a new key).
const RETRYABLE_CODES = new Set(["storage_error", "canceled", "timeout", "queue_full", "rate_limited"]);
// The status POST /exec would have answered for a job that ends while polled.
const JOB_STATUS = { canceled: 409, timeout: 504, input_not_found: 404, key_forbidden: 403, input_too_large: 413 };
// Added to the time the server may hold a request, before the kit gives up on it.
const SLACK_MS = 15000;

/** Accepts a function or a Fetcher (a service binding) and returns a function. */
function asFetch(f) {
  if (!f) return (input, init) => globalThis.fetch(input, init); // unbound fetch throws in Workers
  if (typeof f === "function") return f;
  return (input, init) => f.fetch(input, init);
}

function anySignal(...signals) {
  const s = signals.filter(Boolean);
  return s.length <= 1 ? s[0] : AbortSignal.any(s);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

async function readJson(res) {
  try {
    const v = JSON.parse(await res.text());
    return v && typeof v === "object" ? v : null;
  } catch {
    return null; // a proxy's HTML error page, or nothing
  }
}

/**
 * @param {import("./capkit").CapKitOptions} options
 * @returns {import("./capkit").CapKit}
 */
export function createCapKit(options) {
  const {
    registryUrl,
    resolveToken,
    capabilityToken,
    scheme = "https",
    maxWaitS = 90,
    pollWaitS = 60,
    maxAttempts = 5,
    maxRetryAfterS = 30,
    timeoutMs = 0,
  } = options;
  if (!registryUrl || !resolveToken || !capabilityToken) {
    throw new TypeError("createCapKit: registryUrl, resolveToken and capabilityToken are required");
  }
  const providerFetch = asFetch(options.fetch);
  const registryFetch = asFetch(options.registryFetch ?? options.fetch);
  // A trailing slash keeps a path prefix of the registry URL when joining.
  const registryBase = registryUrl.endsWith("/") ? registryUrl : registryUrl + "/";

  const name = (c) => `${c.provider}:${c.port}`;
  // Built from host and port rather than taken from the registry's `url`,
  // so that a test bed can use plain HTTP (scheme "http").
  const baseUrl = (c) => {
    const dflt = scheme === "https" ? 443 : 80;
    return `${scheme}://${c.provider}${c.port === dflt ? "" : ":" + c.port}`;
  };
  const retryAfterMs = (res) => {
    const v = res.headers.get("Retry-After");
    let s = v === null ? 1 : Number(v);
    if (!Number.isFinite(s)) s = Math.max(0, (Date.parse(v) - Date.now()) / 1000) || 1; // an HTTP date
    return Math.min(Math.max(s, 0), maxRetryAfterS) * 1000;
  };

  async function resolve(capability, { exclude = [], signal } = {}) {
    const url = new URL("capabilities/resolve", registryBase);
    url.searchParams.set("capability", capability);
    for (const e of exclude) url.searchParams.append("exclude", e);
    // The registry is one Durable Object behind a Worker: a failure is
    // short-lived, so a couple of quick retries cover it.
    for (let i = 1; ; i++) {
      let res;
      try {
        res = await registryFetch(url, {
          headers: { Authorization: `Bearer ${resolveToken}` },
          signal: anySignal(signal, AbortSignal.timeout(SLACK_MS)),
        });
      } catch (e) {
        if (signal?.aborted) throw signal.reason;
        if (i < 3) {
          await sleep(500 * i, signal);
          continue;
        }
        throw new CapError(`registry unreachable: ${e.message}`, { code: "registry_unreachable", retryable: true, cause: e });
      }
      const body = await readJson(res);
      if (res.status === 200 && Array.isArray(body?.candidates)) return body;
      if (res.status >= 500 && i < 3) {
        await sleep(500 * i, signal);
        continue;
      }
      throw new CapError(body?.error ?? `registry answered ${res.status}`, {
        status: res.status,
        code: body?.code ?? "registry_error",
        body,
        retryable: res.status === 404 || res.status >= 500,
      });
    }
  }

  // Long-polls an accepted job on its provider until it ends.
  async function poll(c, location, signal) {
    const url = new URL(location, baseUrl(c));
    url.searchParams.set("wait", String(pollWaitS));
    for (let failures = 0; ; ) {
      let res, job;
      try {
        res = await providerFetch(url, {
          headers: { Authorization: `Bearer ${capabilityToken}` },
          signal: anySignal(signal, AbortSignal.timeout(pollWaitS * 1000 + SLACK_MS)),
        });
        job = await readJson(res);
      } catch (e) {
        if (signal?.aborted) throw signal.reason;
        res = null;
        job = { error: e.message };
      }
      if (res?.status === 200 && job?.status) {
        failures = 0;
        if (job.status === "succeeded") return { result: job.result };
        if (job.status === "failed" || job.status === "canceled") {
          const e = job.error ?? {};
          const code = e.code ?? job.status;
          return {
            action: "fail",
            error: new CapError(e.message ?? `job ${job.status}`, {
              status: JOB_STATUS[code] ?? 502, code, provider: name(c), job, retryable: RETRYABLE_CODES.has(code),
            }),
          };
        }
        continue; // still queued, running or uploading
      }
      // The job is gone (the provider restarted) or the provider stays
      // unreachable: start it elsewhere.  Other answers (401...) are final.
      const gone = res?.status === 404 && job?.code === "job_not_found";
      const transient = !res || (res.status >= 500 && !job?.code) || res.status === 408;
      const error = new CapError(job?.error ?? `poll answered ${res?.status}`, {
        status: res?.status ?? 0, code: job?.code ?? (res ? `http_${res.status}` : "provider_unreachable"),
        provider: name(c), body: job, retryable: gone || transient,
      });
      if (gone) return { action: "next", error };
      if (!transient) return { action: "fail", error };
      if (++failures >= 3) return { action: "next", error };
      await sleep(1000 * failures, signal);
    }
  }

  // One POST /exec to one provider.  Returns {result} or {action, error,
  // delayMs}: "next" (another provider), "same" (this one, after delayMs),
  // "busy" (another one if any is left, else this one after delayMs),
  // "fail" (give up).
  async function attempt(c, request, key, signal, onAccepted) {
    // The body's `wait` wins over Prefer on the server; cap-server caps both at 90 s.
    const wait = request.async ? 0 : Math.min(request.wait ?? maxWaitS, 90);
    let res, body;
    try {
      res = await providerFetch(new URL("/exec", baseUrl(c)), {
        method: "POST",
        headers: {
          Authorization: `Bearer ${capabilityToken}`,
          "Content-Type": "application/json",
          "Idempotency-Key": key,
          Prefer: `wait=${Math.min(wait, maxWaitS)}`,
        },
        body: JSON.stringify(request),
        signal: anySignal(signal, AbortSignal.timeout(wait * 1000 + SLACK_MS)),
      });
      body = await readJson(res);
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      return {
        action: "next",
        error: new CapError(`${name(c)} unreachable: ${e.message}`, {
          code: "provider_unreachable", provider: name(c), retryable: true, cause: e,
        }),
      };
    }
    if (res.status === 200) return { result: body };
    if (res.status === 202) {
      const location = res.headers.get("Location") ?? body?.status_url;
      if (onAccepted) {
        await onAccepted({
          provider: c.provider, port: c.port, url: baseUrl(c), job_id: body?.job_id,
          location: new URL(location, baseUrl(c)).href,
        });
      }
      return poll(c, location, signal);
    }
    const code = body?.code;
    const error = new CapError(body?.error ?? `${name(c)} answered ${res.status}`, {
      status: res.status, code: code ?? `http_${res.status}`, provider: name(c), body,
      retryable: res.status === 429 || res.status === 503 || RETRYABLE_CODES.has(code) || FAILOVER_CODES.has(code) || (res.status >= 500 && !code),
    });
    if (res.status === 429) return { action: code === "queue_full" ? "busy" : "same", delayMs: retryAfterMs(res), error };
    // No cap-server code on a 5xx means a proxy in front (Caddy, Funnel)
    // answered: the server behind it is down or restarting.
    if (FAILOVER_CODES.has(code) || ((res.status >= 500 || res.status === 408) && !code)) return { action: "next", error };
    return { action: "fail", error }; // bad input, bad token, or the job's own failure
  }

  async function exec(request, { idempotencyKey, signal, onAccepted } = {}) {
    const capability = request.capability ?? (request.preset ? "ffmpeg-render" : undefined);
    if (!capability) throw new CapError("exec: request.capability is required", { status: 400, code: "missing_field" });
    const key = idempotencyKey ?? crypto.randomUUID();
    const deadline = timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : null;
    try {
      return await run(capability, request, key, anySignal(signal, deadline), onAccepted);
    } catch (e) {
      // The caller's own abort is passed on as is; the kit's deadline is a
      // CapError like any other failure (the job may still be running).
      if (deadline?.aborted && !signal?.aborted) {
        throw new CapError(`exec: no result within ${timeoutMs} ms`, { code: "deadline_exceeded", retryable: true, cause: e });
      }
      throw e;
    }
  }

  async function run(capability, request, key, sig, onAccepted) {
    const excluded = [];
    let attempts = 0;
    let rounds = 0;
    let lastError = null;
    while (attempts < maxAttempts) {
      let candidates;
      try {
        ({ candidates } = await resolve(capability, { exclude: excluded, signal: sig }));
      } catch (e) {
        if (!(e instanceof CapError && e.code === "no_provider" && excluded.length > 0)) throw e;
        // Every live provider failed once.  Failures such as a proxy being
        // restarted pass, so start over with all of them after a pause.
        excluded.length = 0;
        await sleep(Math.min(1000 * 2 ** rounds++, 10000), sig);
        continue;
      }
      for (let i = 0; i < candidates.length && attempts < maxAttempts; ) {
        const c = candidates[i];
        attempts++;
        const out = await attempt(c, request, key, sig, onAccepted);
        if (out.result !== undefined) return out.result;
        lastError = out.error;
        if (out.action === "fail") throw out.error;
        if (out.action === "same" || (out.action === "busy" && i + 1 >= candidates.length)) {
          await sleep(out.delayMs, sig);
          continue;
        }
        excluded.push(name(c));
        i++;
      }
    }
    throw lastError ?? new CapError("exec: no attempt was made", { code: "no_attempt" });
  }

  async function health(target, { signal } = {}) {
    let c = target;
    if (typeof target === "string") {
      const i = target.lastIndexOf(":");
      c = i > 0
        ? { provider: target.slice(0, i), port: Number(target.slice(i + 1)) }
        : { provider: target, port: scheme === "https" ? 443 : 80 };
    }
    let res;
    try {
      res = await providerFetch(new URL("/health", baseUrl(c)), {
        signal: anySignal(signal, AbortSignal.timeout(SLACK_MS)),
      });
    } catch (e) {
      throw new CapError(`${name(c)} unreachable: ${e.message}`, {
        code: "provider_unreachable", provider: name(c), retryable: true, cause: e,
      });
    }
    const body = await readJson(res);
    if (res.status !== 200 || !body) {
      throw new CapError(`${name(c)} /health answered ${res.status}`, {
        status: res.status, code: body?.code ?? `http_${res.status}`, provider: name(c), body, retryable: true,
      });
    }
    return body;
  }

  return { resolve, exec, health };
}

// ---------------------------------------------------------------------------
// Webhooks
//
// cap-server pushes job events (callback_url in POST /exec) the Standard
// Webhooks way: headers webhook-id (the same on every retry of one event),
// webhook-timestamp (unix seconds of this attempt) and webhook-signature,
// "v1,<base64 HMAC-SHA256 over "<id>.<timestamp>.<body>">", one per secret
// during a rotation, space-separated.  verifyWebhook checks one delivery
// with WebCrypto; any other Standard Webhooks library accepts the same
// deliveries.

/** Why a webhook delivery was not accepted. */
export class CapWebhookError extends Error {
  /**
   * @param {string} message
   * @param {"missing_headers"|"stale_timestamp"|"bad_signature"|"bad_payload"|"bad_secret"} code
   */
  constructor(message, code) {
    super(message);
    this.name = "CapWebhookError";
    /** "missing_headers", "stale_timestamp", "bad_signature", "bad_payload" or "bad_secret". */
    this.code = code;
    // What a receiver should answer: the sender's fault is a 4xx (cap-server
    // retries it with backoff, in case the receiver's secret is the newer
    // one); a receiver without a usable secret is misconfigured (500).
    /** The HTTP status a receiver should answer with. */
    this.status = code === "bad_secret" ? 500 : code === "missing_headers" || code === "bad_payload" ? 400 : 401;
  }
}

const WEBHOOK_PREFIX = "whsec_";
const utf8 = new TextEncoder();

function base64Bytes(s) {
  const bin = atob(s); // throws on characters outside the alphabet
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// One HMAC key per secret.  A secret is "whsec_" + base64 of the key bytes;
// the bare base64 is accepted too, as the Standard Webhooks libraries do.
async function webhookKeys(secrets) {
  const list = Array.isArray(secrets) ? secrets : [secrets];
  if (list.length === 0) throw new CapWebhookError("verifyWebhook: no secret given", "bad_secret");
  const keys = [];
  for (const secret of list) {
    if (typeof secret !== "string") throw new CapWebhookError("verifyWebhook: a secret is not a string", "bad_secret");
    const b64 = secret.startsWith(WEBHOOK_PREFIX) ? secret.slice(WEBHOOK_PREFIX.length) : secret;
    let raw;
    try {
      raw = base64Bytes(b64.trim());
    } catch {
      raw = new Uint8Array(0);
    }
    // Never put the secret itself into the message: it ends up in logs.
    if (raw.length === 0) throw new CapWebhookError("verifyWebhook: a secret is not whsec_<base64>", "bad_secret");
    keys.push(await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]));
  }
  return keys;
}

/**
 * Verifies one webhook delivery from cap-server and returns its event.
 *
 * Reads the request's body (once, as bytes: the signature covers the exact
 * bytes sent).  Throws CapWebhookError when a webhook-* header is missing or
 * malformed, the timestamp is further than toleranceS from now (a replayed
 * or delayed-in-transit delivery), no signature matches any of the secrets,
 * or the signed body is not JSON.  Signatures are checked with
 * crypto.subtle.verify, which compares in constant time.
 *
 * @param {Request} request
 * @param {string|string[]} secrets "whsec_..." (an array during a rotation: any one may match)
 * @param {{toleranceS?: number, now?: number|Date}} [options] now: the current time (ms or Date; default Date.now())
 * @returns {Promise<{type: string, timestamp: string, data: object}>} the parsed body;
 *   the event's id (for de-duplicating retries) is request.headers.get("webhook-id")
 */
export async function verifyWebhook(request, secrets, { toleranceS = 300, now } = {}) {
  const keys = await webhookKeys(secrets);
  const id = request.headers.get("webhook-id");
  const ts = request.headers.get("webhook-timestamp");
  const sigs = request.headers.get("webhook-signature");
  if (!id || !ts || !sigs) {
    throw new CapWebhookError("webhook-id, webhook-timestamp and webhook-signature are required", "missing_headers");
  }
  if (!/^[0-9]{1,15}$/.test(ts)) throw new CapWebhookError("webhook-timestamp is not unix seconds", "missing_headers");
  const nowS = Math.floor((now === undefined ? Date.now() : Number(now)) / 1000);
  if (Math.abs(nowS - Number(ts)) > toleranceS) {
    throw new CapWebhookError(`webhook-timestamp is more than ${toleranceS} s away from now`, "stale_timestamp");
  }
  const body = new Uint8Array(await request.arrayBuffer());
  const prefix = utf8.encode(`${id}.${ts}.`);
  const signed = new Uint8Array(prefix.length + body.length);
  signed.set(prefix);
  signed.set(body, prefix.length);
  // Every "v1,<base64>" against every key; other versions are skipped, so a
  // sender may add a newer scheme next to v1.
  let ok = false;
  for (const entry of sigs.split(" ")) {
    if (!entry.startsWith("v1,")) continue;
    let mac;
    try {
      mac = base64Bytes(entry.slice(3));
    } catch {
      continue;
    }
    for (const key of keys) {
      if (await crypto.subtle.verify("HMAC", key, mac, signed)) ok = true;
    }
  }
  if (!ok) throw new CapWebhookError("no webhook-signature matches the secret", "bad_signature");
  let event;
  try {
    event = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    event = null;
  }
  if (!event || typeof event !== "object" || typeof event.type !== "string") {
    throw new CapWebhookError("the signed body is not a webhook event", "bad_payload");
  }
  return event;
}
