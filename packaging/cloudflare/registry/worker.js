// Reference capability registry: a Worker in front of one SQLite-backed
// Durable Object.  cap-server instances register and heartbeat with
// REGISTER_TOKEN; pipeline Workers resolve a capability to the least loaded
// live provider with RESOLVE_TOKEN.  The HTTP contract is documented in
// packaging/cloudflare/README.md ("Registry API").
//
// Why one Durable Object: the registry is tiny (a row per provider and
// capability) and must answer "who is least loaded right now" consistently;
// a single instance gives that without any cross-instance coordination.

import { DurableObject } from "cloudflare:workers";

const MAX_BODY = 16 * 1024;
const DEFAULT_TTL_S = 30;
// Bounds on what a registrant may store, so one bad client cannot bloat
// the table (every resolve reads the rows of its capability).
const MAX_PRESETS = 128;
const MAX_JSON_FIELD = 4096;

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
const HOST_RE = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);

// ---------------------------------------------------------------------------
// Small helpers

class HttpError extends Error {
  constructor(status, code, message, headers) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

function json(status, body, headers) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", "Cache-Control": "no-store", ...headers },
  });
}

function errorResponse(e) {
  return json(e.status, { error: e.message, code: e.code }, e.headers);
}

function num(v, fallback = 0) {
  return Number.isFinite(v) ? v : fallback;
}

function ttlSeconds(env) {
  const n = Number(env.PROVIDER_TTL_S ?? DEFAULT_TTL_S);
  return Number.isFinite(n) && n > 0 ? n : DEFAULT_TTL_S;
}

// The public base URL of a provider: Funnel serves HTTPS on 443, so the
// usual URL carries no port.
function providerUrl(provider, port) {
  return port === 443 ? `https://${provider}` : `https://${provider}:${port}`;
}

// Compares a presented bearer token with the configured one without
// leaking, through timing, how much of it matched: both are hashed to
// fixed-size digests first, so even their lengths stay hidden.
async function tokenMatches(presented, expected) {
  if (typeof expected !== "string" || expected.length === 0) return false; // never match an unset secret
  const enc = new TextEncoder();
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", enc.encode(presented)),
    crypto.subtle.digest("SHA-256", enc.encode(expected)),
  ]);
  if (typeof crypto.subtle.timingSafeEqual === "function") return crypto.subtle.timingSafeEqual(a, b);
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}

async function requireToken(request, expected) {
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(request.headers.get("Authorization") ?? "");
  if (!m || !(await tokenMatches(m[1], expected))) {
    throw new HttpError(401, "unauthorized", "Missing or invalid bearer token", {
      "WWW-Authenticate": "Bearer",
    });
  }
}

// Reads at most MAX_BODY bytes: the declared length is checked first, and
// the stream is cut off when a body without (or lying about) its length
// grows past the limit, so an oversize body is never buffered whole.
async function readJson(request) {
  const declared = Number(request.headers.get("Content-Length") ?? "0");
  if (declared > MAX_BODY) throw new HttpError(413, "body_too_large", `Body over ${MAX_BODY} bytes`);
  const chunks = [];
  let size = 0;
  if (request.body) {
    const reader = request.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > MAX_BODY) {
        await reader.cancel();
        throw new HttpError(413, "body_too_large", `Body over ${MAX_BODY} bytes`);
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    bytes.set(c, off);
    off += c.byteLength;
  }
  let body;
  try {
    body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new HttpError(400, "invalid_json", "The body is not valid UTF-8 JSON");
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new HttpError(400, "invalid_json", "The body must be a JSON object");
  }
  return body;
}

// ---------------------------------------------------------------------------
// Validation: the Worker checks every field before the Durable Object sees
// it, so the table only ever holds well-formed rows.

function bad(message) {
  return new HttpError(400, "bad_request", message);
}

// Host names are compared case-insensitively and `tailscale status` prints
// them with a trailing dot: both are normalised so one machine is one row.
function provider(v) {
  if (typeof v !== "string") throw bad("provider must be a host name");
  const h = v.toLowerCase().replace(/\.$/, "");
  if (h.length === 0 || h.length > 253 || !HOST_RE.test(h)) throw bad("provider must be a host name");
  return h;
}

function port(v) {
  if (!Number.isInteger(v) || v < 1 || v > 65535) throw bad("port must be an integer 1-65535");
  return v;
}

function capability(v, field = "capability") {
  if (typeof v !== "string" || !NAME_RE.test(v)) {
    throw bad(`${field} must be 1-64 of [a-z0-9._-], starting with a letter or digit`);
  }
  return v;
}

function smallObject(v, field) {
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) throw bad(`${field} must be an object`);
  const s = JSON.stringify(v);
  if (s.length > MAX_JSON_FIELD) throw bad(`${field} is too large`);
  return s;
}

function registration(b) {
  const r = { capability: capability(b.capability), provider: provider(b.provider), port: port(b.port) };
  if (b.version !== undefined && (typeof b.version !== "string" || b.version.length > 64)) {
    throw bad("version must be a string of at most 64 characters");
  }
  r.version = b.version ?? null;
  if (b.presets !== undefined) {
    if (!Array.isArray(b.presets) || b.presets.length > MAX_PRESETS) throw bad("presets must be an array of names");
    // Preset names are the operator's own (a presets file may use any), so
    // only their size and printability are checked.
    for (const p of b.presets) {
      if (typeof p !== "string" || p.length < 1 || p.length > 64 || /[\x00-\x1f\x7f]/.test(p)) {
        throw bad("each preset must be a name of 1-64 printable characters");
      }
    }
  }
  r.presets = b.presets ? JSON.stringify(b.presets) : null;
  r.pools = smallObject(b.pools, "pools");
  return r;
}

function heartbeat(b) {
  const load = smallObject(b.load, "load");
  if (b.draining !== undefined && typeof b.draining !== "boolean") throw bad("draining must be a boolean");
  // cap-server reports draining inside load; a top-level flag is accepted too.
  const draining = b.draining === true || (b.load && b.load.draining === true);
  return { provider: provider(b.provider), port: port(b.port), load, draining };
}

function deregistration(b) {
  return {
    provider: provider(b.provider),
    port: port(b.port),
    capability: b.capability === undefined ? null : capability(b.capability),
  };
}

// ---------------------------------------------------------------------------
// The Durable Object

export class CapabilityRegistryDO extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.ttlMs = ttlSeconds(env) * 1000;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS registrations (
      capability TEXT NOT NULL,
      provider   TEXT NOT NULL,
      port       INTEGER NOT NULL,
      version    TEXT,
      presets    TEXT,
      pools      TEXT,
      load       TEXT,
      draining   INTEGER NOT NULL DEFAULT 0,
      registered_at INTEGER NOT NULL,
      last_seen  INTEGER NOT NULL,
      PRIMARY KEY (capability, provider, port))`);
  }

  // Makes sure an alarm will come to delete rows that stop heartbeating,
  // even if nobody resolves their capability again.  An existing alarm is
  // never later than the expiry of any row written after it was set, so it
  // is kept; alarm() sets the next one.
  async ensureAlarm() {
    if ((await this.ctx.storage.getAlarm()) === null) {
      await this.ctx.storage.setAlarm(Date.now() + this.ttlMs + 500);
    }
  }

  async alarm() {
    const now = Date.now();
    this.sql.exec("DELETE FROM registrations WHERE last_seen < ?", now - this.ttlMs);
    const next = this.sql.exec("SELECT MIN(last_seen) AS t FROM registrations").one().t;
    if (next !== null) await this.ctx.storage.setAlarm(next + this.ttlMs + 500);
  }

  async register(r) {
    const now = Date.now();
    // A (re-)registration is also a heartbeat.  It clears draining (a server
    // that registers wants work: a restarted one registers on start-up) but
    // keeps the last load until the next heartbeat replaces it.
    this.sql.exec(
      `INSERT INTO registrations (capability, provider, port, version, presets, pools, registered_at, last_seen)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (capability, provider, port) DO UPDATE SET
         version = excluded.version, presets = excluded.presets, pools = excluded.pools,
         draining = 0, last_seen = excluded.last_seen`,
      r.capability, r.provider, r.port, r.version, r.presets, r.pools, now, now,
    );
    // Other capabilities of the same provider are alive too.
    this.sql.exec("UPDATE registrations SET last_seen = ? WHERE provider = ? AND port = ?", now, r.provider, r.port);
    await this.ensureAlarm();
    return { ok: true, capability: r.capability, provider: r.provider, port: r.port, ttl_s: this.ttlMs / 1000 };
  }

  async heartbeat(h) {
    const now = Date.now();
    // An expired registration is gone even if the alarm has not run yet:
    // the provider must register again (it may have restarted meanwhile).
    this.sql.exec(
      "DELETE FROM registrations WHERE provider = ? AND port = ? AND last_seen < ?",
      h.provider, h.port, now - this.ttlMs,
    );
    const n = this.sql
      .exec(
        "UPDATE registrations SET load = ?, draining = ?, last_seen = ? WHERE provider = ? AND port = ? RETURNING 1",
        h.load, h.draining ? 1 : 0, now, h.provider, h.port,
      )
      .toArray().length;
    if (n === 0) return null;
    await this.ensureAlarm();
    return { ok: true, ttl_s: this.ttlMs / 1000 };
  }

  deregister(d) {
    const rows = d.capability === null
      ? this.sql.exec("DELETE FROM registrations WHERE provider = ? AND port = ? RETURNING 1", d.provider, d.port)
      : this.sql.exec(
          "DELETE FROM registrations WHERE provider = ? AND port = ? AND capability = ? RETURNING 1",
          d.provider, d.port, d.capability,
        );
    return { ok: true, removed: rows.toArray().length };
  }

  resolve(cap, exclude) {
    const now = Date.now();
    this.sql.exec("DELETE FROM registrations WHERE capability = ? AND last_seen < ?", cap, now - this.ttlMs);
    const rows = this.sql
      .exec("SELECT * FROM registrations WHERE capability = ? AND draining = 0", cap)
      .toArray()
      .filter((r) => !exclude.includes(`${r.provider}:${r.port}`))
      .map((r) => {
        const load = r.load ? JSON.parse(r.load) : null;
        // Before its first heartbeat a provider has no load: its slots come
        // from the pools it registered, with nothing running or queued.
        const pools = r.pools ? Object.values(JSON.parse(r.pools)) : [];
        const slots = num(load?.slots, pools.reduce((s, p) => s + num(p?.slots), 0));
        const running = num(load?.running);
        const queued = num(load?.queued);
        return { row: r, load, free: slots - running - queued, running, queued };
      });
    // Least loaded first: most free slots, then fewest queued, then fewest
    // running, then the most recently seen (its load figures are freshest).
    rows.sort(
      (a, b) =>
        b.free - a.free || a.queued - b.queued || a.running - b.running || b.row.last_seen - a.row.last_seen,
    );
    if (rows.length === 0) return null;
    const candidates = rows.map(({ row, load }) => ({
      provider: row.provider,
      port: row.port,
      url: providerUrl(row.provider, row.port),
      load,
      age_s: Math.round((now - row.last_seen) / 100) / 10,
      version: row.version,
      presets: row.presets ? JSON.parse(row.presets) : null,
    }));
    const best = candidates[0];
    return { capability: cap, provider: best.provider, port: best.port, url: best.url, load: best.load, candidates };
  }

  list() {
    const now = Date.now();
    const registrations = this.sql
      .exec("SELECT * FROM registrations ORDER BY capability, provider, port")
      .toArray()
      .map((r) => ({
        capability: r.capability,
        provider: r.provider,
        port: r.port,
        url: providerUrl(r.provider, r.port),
        version: r.version,
        presets: r.presets ? JSON.parse(r.presets) : null,
        pools: r.pools ? JSON.parse(r.pools) : null,
        load: r.load ? JSON.parse(r.load) : null,
        age_s: Math.round((now - r.last_seen) / 100) / 10,
        registered_at: new Date(r.registered_at).toISOString(),
        // An expired row stays listed (as not live) until the alarm deletes it.
        live: r.draining === 0 && now - r.last_seen <= this.ttlMs,
        draining: r.draining === 1,
      }));
    return { ttl_s: this.ttlMs / 1000, registrations };
  }
}

// ---------------------------------------------------------------------------
// The Worker: authentication, validation, routing

const ROUTES = {
  "/health": "GET",
  "/capabilities": "GET",
  "/capabilities/resolve": "GET",
  "/capabilities/register": "POST",
  "/capabilities/heartbeat": "POST",
  "/capabilities/deregister": "POST",
};

async function route(request, env) {
  const url = new URL(request.url);
  const method = ROUTES[url.pathname];
  if (!method) throw new HttpError(404, "not_found", "No such route");
  // HEAD is answered wherever GET is (the runtime drops the body).
  if (request.method !== method && !(method === "GET" && request.method === "HEAD")) {
    throw new HttpError(405, "method_not_allowed", "Method not allowed", {
      Allow: method === "GET" ? "GET, HEAD" : method,
    });
  }
  if (url.pathname === "/health") return json(200, { status: "ok" });

  const registry = env.REGISTRY.get(env.REGISTRY.idFromName("global"));

  if (method === "GET") {
    await requireToken(request, env.RESOLVE_TOKEN);
    if (url.pathname === "/capabilities") return json(200, await registry.list());
    const cap = capability(url.searchParams.get("capability") ?? undefined);
    const exclude = url.searchParams.getAll("exclude").map((e) => {
      const i = e.lastIndexOf(":");
      if (i <= 0 || !/^[0-9]{1,5}$/.test(e.slice(i + 1))) throw bad("exclude must be <provider>:<port>");
      return `${provider(e.slice(0, i))}:${port(Number(e.slice(i + 1)))}`;
    });
    const r = await registry.resolve(cap, exclude);
    if (!r) throw new HttpError(404, "no_provider", `No live provider for ${cap}`);
    return json(200, r);
  }

  // Authenticate before reading the body: an unauthenticated client gets
  // nothing parsed on its behalf.
  await requireToken(request, env.REGISTER_TOKEN);
  const body = await readJson(request);
  switch (url.pathname) {
    case "/capabilities/register":
      return json(200, await registry.register(registration(body)));
    case "/capabilities/heartbeat": {
      const r = await registry.heartbeat(heartbeat(body));
      if (!r) throw new HttpError(404, "not_registered", "This provider is not registered; register again");
      return json(200, r);
    }
    default:
      return json(200, await registry.deregister(deregistration(body)));
  }
}

export default {
  async fetch(request, env) {
    try {
      return await route(request, env);
    } catch (e) {
      if (e instanceof HttpError) return errorResponse(e);
      // Never echo internals (or anything from the request) to the client.
      console.error("registry: internal error", e && e.stack ? e.stack : String(e));
      return json(500, { error: "Internal error", code: "internal" });
    }
  },
};
