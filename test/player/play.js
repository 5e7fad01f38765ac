#!/usr/bin/env node
// Plays an HLS package to its end in headless Chromium with hls.js, or a
// DASH package with dash.js, and prints one JSON line of what happened.
//
//   node test/player/play.js <master_url> [--force-level N] [--timeout S] [--rate R]
//                            [--dash | --hls]
//
// A URL whose path ends in .mpd is played as DASH (dash-player.html,
// dash.js) unless --hls says otherwise; --dash forces DASH for any URL.
// Everything below is the HLS behaviour; the DASH differences are listed
// after it.
//
// <master_url> is the master playlist where the package lies, e.g. the S3
// bed's http://127.0.0.1:<port>/<bucket>/vod/abc/master.m3u8.  A small server
// on 127.0.0.1 (ephemeral port) serves the page and hls.js, and passes every
// other path through to <master_url>'s origin, so the page loads the package
// from its own origin:
//   * the S3 bed (Swift s3api) answers no CORS: PutBucketCors is
//     NotImplemented, a GET with Origin gets no Access-Control-Allow-Origin,
//     OPTIONS is 405, so hls.js could not read it cross-origin;
//   * the bed serves no anonymous reads (an unsigned GET is a 400), so when
//     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set (AWS_REGION,
//     default us-east-1) each proxied GET is signed with SigV4
//     (UNSIGNED-PAYLOAD); without them it goes through as is (a public
//     bucket, or hlscheck.serve()).
//
// The video plays muted at --rate (default 4) from the start to `ended`.
// --force-level N (an index into hls.levels, which hls.js orders by
// bitrate, lowest first, as MANIFEST_PARSED reports) starts on another level
// and switches to N once playback has begun (hls.currentLevel = N).
//
// Output (stdout, one line): ok, reason, ended, fatal_errors, errors,
// levels, audio_tracks, start_level, forced_level, level_switched,
// frag_loaded / frag_buffered (per level), audio_frag_loaded,
// decoded_frames, dropped_frames, audio_decoded_bytes, duration,
// current_time, requests (proxied GETs), http_errors, page_errors,
// browser, hls_version, wall_seconds.  Exit 0 when it reached `ended` with no
// fatal hls.js error, no media element error and no page error (and, with
// --force-level, the switch to N happened); 1 when playback failed; 2 for a
// usage error or a browser that did not start.
//
// DASH (dash-player.html with node_modules/dashjs/dist/modern/umd/
// dash.all.min.js): master_url is the MPD.  --force-level N indexes the
// video Representations sorted by bandwidth, lowest first; video ABR is off,
// playback starts on the lowest one (the highest when N is 0) and switches
// with player.setRepresentationForTypeById('video', id, true).  The output
// has player "dash.js", dashjs_version instead of hls_version,
// representations (index, id, bandwidth, width, height, frame_rate, codecs,
// mime_type) instead of levels, audio_tracks, audio_representations,
// video_tracks, initial_level, representation_switched, and the HLS fields
// otherwise (level_switched from QUALITY_CHANGE_RENDERED; frag_loaded from
// FRAGMENT_LOADING_COMPLETED, frag_buffered from dash.js's
// bytesAppendedEndFragment, both per representation index).  Every dash.js
// ERROR event counts as fatal, so ok needs none.
"use strict";
const http = require("http");
const https = require("https");
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");

const HERE = __dirname;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

function usage(msg) {
  if (msg) process.stderr.write("play.js: " + msg + "\n");
  process.stderr.write("usage: node play.js <master_url> [--force-level N] [--timeout S] [--rate R] [--dash | --hls]\n");
  process.exit(2);
}

function parseArgs(argv) {
  const o = { url: null, forceLevel: null, timeout: 120, rate: 4, dash: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { if (i + 1 >= argv.length) usage(a + " needs a value"); return argv[++i]; };
    if (a === "--force-level") { o.forceLevel = Number(val()); if (!Number.isInteger(o.forceLevel) || o.forceLevel < 0) usage("bad --force-level"); }
    else if (a === "--timeout") { o.timeout = Number(val()); if (!(o.timeout > 0)) usage("bad --timeout"); }
    else if (a === "--rate") { o.rate = Number(val()); if (!(o.rate > 0 && o.rate <= 16)) usage("bad --rate (0 < R <= 16)"); }
    else if (a === "--dash" || a === "--hls") {
      const d = a === "--dash";
      if (o.dash !== null && o.dash !== d) usage("--dash and --hls together");
      o.dash = d;
    }
    else if (a === "-h" || a === "--help") usage();
    else if (a.startsWith("-")) usage("unknown option " + a);
    else if (o.url === null) o.url = a;
    else usage("one master URL only");
  }
  if (!o.url) usage("no master URL");
  let u;
  try { u = new URL(o.url); } catch (e) { usage("bad URL " + o.url); }
  if (u.protocol !== "http:" && u.protocol !== "https:") usage("http(s) URL needed");
  o.parsed = u;
  // An .mpd path is DASH unless --hls says otherwise.
  if (o.dash === null) o.dash = /\.mpd$/i.test(u.pathname);
  return o;
}

// --- SigV4 for the proxied GETs -------------------------------------------

function hmac(key, s) { return crypto.createHmac("sha256", key).update(s, "utf8").digest(); }
function sha256hex(s) { return crypto.createHash("sha256").update(s, "utf8").digest("hex"); }
function uriEncode(s, keepSlash) {
  return Array.from(Buffer.from(s, "utf8")).map((b) => {
    const c = String.fromCharCode(b);
    if (/[A-Za-z0-9\-_.~]/.test(c) || (keepSlash && c === "/")) return c;
    return "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }).join("");
}

function sigv4(method, host, rawPath, query, creds) {
  const now = new Date();
  const amzDate = now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const day = amzDate.slice(0, 8);
  // The path as the client sent it, decoded once and encoded S3's way.
  const canonPath = uriEncode(decodeURIComponent(rawPath), true);
  const q = [];
  for (const [k, v] of new URLSearchParams(query)) q.push([uriEncode(k), uriEncode(v)]);
  q.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : (a[1] < b[1] ? -1 : 1)));
  const payload = "UNSIGNED-PAYLOAD";
  const headers = { host: host, "x-amz-content-sha256": payload, "x-amz-date": amzDate };
  const signed = Object.keys(headers).sort();
  const canonical = [method, canonPath, q.map((p) => p[0] + "=" + p[1]).join("&"),
    signed.map((k) => k + ":" + headers[k] + "\n").join(""), signed.join(";"), payload].join("\n");
  const scope = day + "/" + creds.region + "/s3/aws4_request";
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256hex(canonical)].join("\n");
  let key = Buffer.from("AWS4" + creds.secret, "utf8");
  for (const piece of [day, creds.region, "s3", "aws4_request"]) key = hmac(key, piece);
  const signature = crypto.createHmac("sha256", key).update(toSign, "utf8").digest("hex");
  return {
    "x-amz-date": amzDate, "x-amz-content-sha256": payload,
    authorization: "AWS4-HMAC-SHA256 Credential=" + creds.access + "/" + scope +
      ", SignedHeaders=" + signed.join(";") + ", Signature=" + signature,
  };
}

// --- the page's server: player, hls.js or dash.js, and the pass-through -----

const HLS_JS = path.join(HERE, "node_modules", "hls.js", "dist", "hls.min.js");
const DASH_JS = path.join(HERE, "node_modules", "dashjs", "dist", "modern", "umd", "dash.all.min.js");

function startServer(upstream, creds, stats, dash) {
  const files = dash ? {
    "/__player/dash-player.html": [path.join(HERE, "dash-player.html"), "text/html; charset=utf-8"],
    "/__player/dash.all.min.js": [DASH_JS, "text/javascript"],
    "/__player/player-common.js": [path.join(HERE, "player-common.js"), "text/javascript"],
  } : {
    "/__player/player.html": [path.join(HERE, "player.html"), "text/html; charset=utf-8"],
    "/__player/hls.js": [HLS_JS, "text/javascript"],
    "/__player/player-common.js": [path.join(HERE, "player-common.js"), "text/javascript"],
  };
  const client = upstream.protocol === "https:" ? https : http;
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, "http://x");
    if (files[u.pathname]) {
      const [file, type] = files[u.pathname];
      fs.readFile(file, (err, data) => {
        if (err) { res.writeHead(500); res.end(String(err)); return; }
        res.writeHead(200, { "content-type": type, "cache-control": "no-store" });
        res.end(data);
      });
      return;
    }
    if (u.pathname === "/favicon.ico") { res.writeHead(204); res.end(); return; }
    if (req.method !== "GET" && req.method !== "HEAD") { res.writeHead(405); res.end(); return; }
    stats.requests++;
    const headers = { host: upstream.host };
    if (req.headers.range) headers.range = req.headers.range;
    if (creds) Object.assign(headers, sigv4(req.method, upstream.host, u.pathname, u.search, creds));
    const up = client.request({
      protocol: upstream.protocol, hostname: upstream.hostname, port: upstream.port,
      method: req.method, path: u.pathname + u.search, headers: headers, timeout: 60000,
    }, (ures) => {
      if (ures.statusCode >= 400) stats.http_errors.push({ path: u.pathname, status: ures.statusCode });
      const out = { "cache-control": "no-store" };
      for (const h of ["content-type", "content-length", "content-range", "accept-ranges", "etag", "last-modified"]) {
        if (ures.headers[h]) out[h] = ures.headers[h];
      }
      res.writeHead(ures.statusCode, out);
      ures.pipe(res);
    });
    up.on("timeout", () => up.destroy(new Error("upstream timeout")));
    up.on("error", (e) => {
      stats.http_errors.push({ path: u.pathname, status: 502, error: String(e.message || e) });
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end("upstream: " + e.message);
    });
    up.end();
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const t0 = Date.now();
  const result = { ok: false, reason: null, master_url: opts.url, forced_level: opts.forceLevel };
  if (opts.dash) result.player = "dash.js";
  const stats = { requests: 0, http_errors: [] };
  const emit = (code) => {
    Object.assign(result, { requests: stats.requests, http_errors: stats.http_errors,
                            wall_seconds: (Date.now() - t0) / 1000 });
    process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(code));
  };

  let chromium;
  try {
    ({ chromium } = require(path.join(HERE, "node_modules", "playwright-core")));
  } catch (e) {
    result.reason = "playwright-core missing: run test/player/setup.sh (" + e.message + ")";
    return emit(2);
  }
  if (opts.dash && !fs.existsSync(DASH_JS)) {
    result.reason = "dash.js missing: run test/player/setup.sh";
    return emit(2);
  }
  if (!opts.dash && !fs.existsSync(HLS_JS)) {
    result.reason = "hls.js missing: run test/player/setup.sh";
    return emit(2);
  }
  const creds = process.env.AWS_ACCESS_KEY_ID && process.env.AWS_SECRET_ACCESS_KEY
    ? { access: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY,
        region: process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || "us-east-1" }
    : null;
  result.signed = !!creds;

  let server, browser;
  const cleanup = async () => {
    if (browser) { try { await browser.close(); } catch (e) { /* gone */ } }
    if (server) server.close();
  };
  const hardTimer = setTimeout(() => {
    // Last resort if the browser itself hangs: report and leave.
    result.reason = result.reason || "timeout (browser unresponsive)";
    cleanup().finally(() => emit(1));
  }, (opts.timeout + 30) * 1000);
  hardTimer.unref();

  try {
    server = await startServer(opts.parsed, creds, stats, opts.dash);
    const origin = "http://127.0.0.1:" + server.address().port;
    try {
      browser = await chromium.launch({
        executablePath: CHROMIUM, headless: true, timeout: 60000,
        args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
               "--disable-dev-shm-usage", "--no-first-run", "--disable-background-media-suspend",
               "--disable-renderer-backgrounding", "--disable-background-timer-throttling"],
      });
    } catch (e) {
      result.reason = "chromium did not start (" + CHROMIUM + "): " + String(e.message || e).split("\n")[0];
      await cleanup();
      return emit(2);
    }
    result.browser = "chromium " + browser.version();
    const page = await browser.newPage();
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e.message || e)));
    page.on("console", (m) => { if (m.type() === "error" && pageErrors.length < 50) pageErrors.push("console: " + m.text()); });
    await page.goto(origin + (opts.dash ? "/__player/dash-player.html" : "/__player/player.html"),
                    { waitUntil: "load", timeout: 30000 });
    await page.evaluate((o) => window.runPlayer(o),
      { src: opts.parsed.pathname + opts.parsed.search, forceLevel: opts.forceLevel, rate: opts.rate });
    let timedOut = false;
    try {
      await page.waitForFunction(() => window.__done === true, null, { timeout: opts.timeout * 1000, polling: 100 });
    } catch (e) {
      timedOut = true;
      await page.evaluate(() => { if (!window.__done) { window.__state.timed_out = true; } });
    }
    const state = await page.evaluate(() => {
      const s = window.__state, v = document.getElementById("v");
      if (!window.__done) {   // snapshot what a timeout left
        s.duration = isFinite(v.duration) ? v.duration : null;
        s.current_time = v.currentTime;
        if (v.getVideoPlaybackQuality) {
          const q = v.getVideoPlaybackQuality();
          s.decoded_frames = q.totalVideoFrames; s.dropped_frames = q.droppedVideoFrames;
        }
        s.buffered = Array.from({ length: v.buffered.length }, (_, i) => [v.buffered.start(i), v.buffered.end(i)]);
        s.ready_state = v.readyState;
        s.source_buffers = sourceBufferState();
      }
      return s;
    });
    Object.assign(result, state);
    // Chromium reports some failed loads only on its console.
    result.page_errors = pageErrors.filter((m) => !/favicon/.test(m));
    const switchedTo = (state.level_switched || []).map((x) => x.level);
    // hls.js announces no LEVEL_SWITCHED for a level set before loading
    // starts, so "played the start level first" is its buffered fragments.
    // (dash.js does announce its first QUALITY_CHANGE_RENDERED; the same
    // rule holds for it.)
    const fb = state.frag_buffered || {};
    result.switched = opts.forceLevel === null ? null : switchedTo.includes(opts.forceLevel) &&
      (state.start_level === opts.forceLevel || (fb[String(state.start_level)] || 0) > 0) &&
      (fb[String(opts.forceLevel)] || 0) > 0;
    const problems = [];
    if (timedOut) problems.push("timeout after " + opts.timeout + " s");
    if (!state.ended) problems.push("did not reach ended");
    if (state.fatal_errors) problems.push(state.fatal_errors + " fatal error(s)");
    if ((state.video_errors || []).length) problems.push("media element error");
    if (result.page_errors.length) problems.push("page errors");
    if (opts.forceLevel !== null && !result.switched) {
      problems.push((opts.dash ? "no switch to representation " : "no switch to level ") + opts.forceLevel);
    }
    result.ok = problems.length === 0;
    result.reason = problems.length ? problems.join("; ") : "ended";
    await cleanup();
    clearTimeout(hardTimer);
    return emit(result.ok ? 0 : 1);
  } catch (e) {
    result.reason = "player harness error: " + String(e.stack || e);
    await cleanup();
    return emit(2);
  }
}

main();
