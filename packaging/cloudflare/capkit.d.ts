// Types for capkit.js: running cap-server jobs from a Cloudflare Worker.

/** Something that fetches: `globalThis.fetch`, or a service binding (Fetcher). */
export type FetchLike =
  | ((input: RequestInfo | URL, init?: RequestInit) => Promise<Response>)
  | { fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> };

export interface CapKitOptions {
  /** Base URL of the capability registry, e.g. "https://cap-registry.example.workers.dev". */
  registryUrl: string;
  /** The registry's RESOLVE_TOKEN. */
  resolveToken: string;
  /** cap-server's bearer token for /exec and /jobs. */
  capabilityToken: string;
  /** Fetches providers (and the registry unless registryFetch is given). Default: globalThis.fetch. */
  fetch?: FetchLike;
  /** Fetches the registry, e.g. a service binding to the registry Worker. Default: `fetch`. */
  registryFetch?: FetchLike;
  /** How providers are reached: "https" (Funnel, default) or "http" (a local test bed). */
  scheme?: "https" | "http";
  /** Seconds POST /exec may wait for the result before answering 202 (Prefer: wait). Default 90. */
  maxWaitS?: number;
  /** Seconds one long-poll of GET /jobs/{id}?wait= may take. Default 60. */
  pollWaitS?: number;
  /** POST /exec attempts per exec() call, over all providers. Default 5. */
  maxAttempts?: number;
  /** Longest Retry-After honoured before retrying, in seconds. Default 30. */
  maxRetryAfterS?: number;
  /** Deadline for a whole exec() call in milliseconds; 0 (default): none. */
  timeoutMs?: number;
}

/** The JSON a job request carries; see cap-server's POST /exec. */
export interface ExecRequest {
  capability?: "ffmpeg-render" | "ffprobe" | string;
  input_key: string;
  /** Where a single-output preset's object goes. */
  output_key?: string;
  /** Where a ladder preset (hls-ladder, hls-ladder-ts, dash-ladder, ...) puts its package; a "/" is added when missing. */
  output_prefix?: string;
  preset?: string;
  /** Seconds to wait before a 202 (0-90); the kit then long-polls. */
  wait?: number;
  async?: boolean;
  [field: string]: unknown;
}

/** One rendition of a ladder's package. */
export interface Rendition {
  name: string;
  width?: number;
  height?: number;
  /** Peak segment bit rate of this rendition plus the audio's, bits/s (the master's BANDWIDTH). */
  bandwidth?: number;
  average_bandwidth?: number;
  codecs: string;
  playlist_key: string;
  segments: number;
  bytes: number;
}

/** A job's result: a render's `{r2_key, bytes, duration_ms, ...}`, a ladder's
 * `{output_prefix, master_key, renditions, ...}` or a probe's `{probe, duration_ms, ...}`. */
export interface ExecResult {
  job_id: string;
  status: "succeeded";
  duration_ms: number;
  r2_key?: string;
  bytes?: number;
  preset?: string;
  etag?: string;
  parts?: number;
  probe?: { format: Record<string, unknown>; streams: Record<string, unknown>[] };
  /** A ladder's: the prefix (with its "/"), the master playlist's key, the video renditions (highest first). */
  output_prefix?: string;
  master_key?: string;
  /** A dash-ladder's DASH manifest (over the same segments as master_key). */
  mpd_key?: string;
  renditions?: Rendition[];
  /** The audio rendition, or null for a source without audio. */
  audio?: Rendition | null;
  /** Rungs left out because the source is smaller (a ladder never upscales). */
  dropped?: string[];
  source?: { width: number; height: number };
  /** Objects stored under the prefix. */
  objects?: number;
  [field: string]: unknown;
}

export interface Load {
  running?: number;
  queued?: number;
  slots?: number;
  free?: number;
  draining?: boolean;
  classes?: Record<string, { slots?: number; running?: number; queued?: number }>;
}

export interface Candidate {
  provider: string;
  port: number;
  url: string;
  load: Load | null;
  age_s: number;
  version?: string | null;
  presets?: string[] | null;
}

export interface Resolution {
  capability: string;
  provider: string;
  port: number;
  url: string;
  load: Load | null;
  /** Every live provider, best (least loaded) first. */
  candidates: Candidate[];
}

export interface Accepted {
  provider: string;
  port: number;
  /** The provider's base URL. */
  url: string;
  job_id: string;
  /** Absolute URL of the job (GET it with the capability token). */
  location: string;
}

export interface ExecOptions {
  /** Sent as Idempotency-Key on every attempt of this call. Default: crypto.randomUUID(). */
  idempotencyKey?: string;
  signal?: AbortSignal;
  /** Called when a provider accepted the job but has not finished it (202). */
  onAccepted?: (accepted: Accepted) => void | Promise<void>;
}

export interface CapKit {
  /** Live providers of a capability, best first. Throws CapError "no_provider" when none. */
  resolve(capability: string, options?: { exclude?: string[]; signal?: AbortSignal }): Promise<Resolution>;
  /** Runs one job on the best provider that takes it; see capkit.js for the retry rules. */
  exec(request: ExecRequest, options?: ExecOptions): Promise<ExecResult>;
  /** A provider's GET /health, given `{provider, port}` or "host:port". */
  health(target: { provider: string; port: number } | string, options?: { signal?: AbortSignal }): Promise<Record<string, unknown>>;
}

export declare class CapError extends Error {
  constructor(
    message: string,
    info?: {
      status?: number;
      code?: string;
      provider?: string | null;
      retryable?: boolean;
      job?: object | null;
      body?: object | null;
      cause?: unknown;
    },
  );
  name: "CapError";
  /** HTTP status of the answer that ended the call; 0 when there was none. */
  status: number;
  /** cap-server's or the registry's `code` (e.g. "invalid_key", "ffmpeg_failed", "no_provider"),
   * or capkit's own: "provider_unreachable", "registry_unreachable", "http_<status>". */
  code: string;
  /** "host:port" of the provider that answered, if any. */
  provider: string | null;
  /** Whether a later exec() call may succeed. */
  retryable: boolean;
  /** The job object, when the job itself failed or was canceled. */
  job: object | null;
  /** The parsed error body, if any. */
  body: object | null;
}

export declare function createCapKit(options: CapKitOptions): CapKit;

/** The body of a webhook cap-server sends to a job's callback_url. */
export interface CapWebhookEvent {
  type: "job.started" | "job.progress" | "job.succeeded" | "job.failed" | "job.canceled" | string;
  /** When the event happened: RFC 3339 UTC with milliseconds. */
  timestamp: string;
  /** The job object, as GET /jobs/{id} answers it at that moment. */
  data: {
    job_id: string;
    status: "queued" | "running" | "uploading" | "succeeded" | "failed" | "canceled";
    result?: ExecResult | null;
    error?: { code: string; message: string; retryable?: boolean; [field: string]: unknown } | null;
    [field: string]: unknown;
  };
}

export interface VerifyWebhookOptions {
  /** Largest difference between webhook-timestamp and now, in seconds. Default 300. */
  toleranceS?: number;
  /** The current time (milliseconds since the epoch, or a Date). Default Date.now(). */
  now?: number | Date;
}

/**
 * Verifies one delivery (Standard Webhooks: webhook-id, webhook-timestamp,
 * webhook-signature "v1,<base64 HMAC-SHA256>") and returns its parsed body.
 * Reads the request's body. `secrets`: "whsec_<base64>", or several during a
 * rotation (any may match). The event's id, the same on every retry, is
 * `request.headers.get("webhook-id")`. Throws CapWebhookError.
 */
export declare function verifyWebhook(
  request: Request,
  secrets: string | string[],
  options?: VerifyWebhookOptions,
): Promise<CapWebhookEvent>;

export declare class CapWebhookError extends Error {
  constructor(message: string, code: CapWebhookError["code"]);
  name: "CapWebhookError";
  /** missing_headers: a webhook-* header is absent or malformed; stale_timestamp: further than
   * toleranceS from now; bad_signature: no signature matches; bad_payload: the signed body is not an
   * event; bad_secret: a secret is not whsec_<base64> (the receiver's configuration). */
  code: "missing_headers" | "stale_timestamp" | "bad_signature" | "bad_payload" | "bad_secret";
  /** What a receiver should answer: 400, 401, or 500 for bad_secret. */
  status: number;
}
