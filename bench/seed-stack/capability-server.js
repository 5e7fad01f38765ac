'use strict';
// The "seed stack": the Node + express + express-rate-limit capability server
// sketched in the design article ("Bridging Local Compute and Cloud APIs"),
// used by bench/http-bench.sh as the baseline cap-server is compared against.
//
//   CAPABILITY_TOKEN=... node capability-server.js --port 3001 [--host 127.0.0.1] [--rate-limit 30]
//
// Kept as the article has it (express defaults, express-rate-limit on /exec,
// Bearer-token check before any work), with these additions so both servers do
// comparable work and send comparable bytes:
//   - /health also returns version and uptime_s, like cap-server;
//   - errors carry a "code" field (401 body is byte-identical to cap-server's),
//     401 sends `WWW-Authenticate: Bearer`;
//   - every response gets `Cache-Control: no-store` and an `X-Request-Id`
//     (client's echoed if it looks sane, else 32 random hex chars);
//   - the JSON body parser runs only after auth (cap-server rejects at
//     headers-complete and never parses an unauthenticated body either);
//   - a valid authenticated /exec answers 501 not_implemented, like cap-server
//     before the jobs issue.
// No request logging (the article has none).

const crypto = require('node:crypto');
const express = require('express');
const { rateLimit } = require('express-rate-limit');

function parseArgs(argv) {
  const opts = { port: 3001, host: '127.0.0.1', rateLimit: 30 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    switch (a) {
      case '--port': opts.port = Number(v); i++; break;
      case '--host': opts.host = v; i++; break;
      case '--rate-limit': opts.rateLimit = Number(v); i++; break;
      default:
        process.stderr.write(`capability-server: unknown argument ${a}\n`);
        process.exit(2);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    process.stderr.write('capability-server: port: must be 0..65535\n');
    process.exit(2);
  }
  if (!Number.isInteger(opts.rateLimit) || opts.rateLimit < 1) {
    process.stderr.write('capability-server: rate_limit: must be a positive integer\n');
    process.exit(2);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const TOKEN = process.env.CAPABILITY_TOKEN;
if (!TOKEN || TOKEN.length < 16) {
  process.stderr.write('capability-server: token: CAPABILITY_TOKEN must be set (16+ chars)\n');
  process.exit(2);
}

const VERSION = '0.1.0';
const CAPABILITIES = ['ffmpeg-render', 'ffprobe'];
const started = Date.now();
const REQ_ID_RE = /^[A-Za-z0-9._:-]{1,64}$/;

const app = express();

app.use((req, res, next) => {
  const rid = req.headers['x-request-id'];
  res.set('X-Request-Id',
    typeof rid === 'string' && REQ_ID_RE.test(rid) ? rid : crypto.randomBytes(16).toString('hex'));
  res.set('Cache-Control', 'no-store');
  next();
});

app.get('/health', (req, res) => {
  res.json({
    status: 'ok',
    capabilities: CAPABILITIES,
    version: VERSION,
    uptime_s: Math.floor((Date.now() - started) / 1000),
  });
});

const limiter = rateLimit({
  windowMs: 60 * 1000,
  limit: opts.rateLimit,
  message: { error: 'Rate limit exceeded', code: 'rate_limited' },
});
app.use('/exec', limiter);

function requireToken(req, res, next) {
  const h = req.headers.authorization;
  const token = typeof h === 'string' && h.startsWith('Bearer ') ? h.slice(7) : null;
  if (!token || token !== TOKEN) {
    res.set('WWW-Authenticate', 'Bearer');
    return res.status(401).json({ error: 'Unauthorized', code: 'unauthorized' });
  }
  next();
}

app.post('/exec', requireToken, express.json({ limit: 65536 }), (req, res) => {
  if (!req.is('application/json')) {
    return res.status(415).json({ error: 'Unsupported Media Type', code: 'unsupported_media_type' });
  }
  res.status(501).json({ error: 'Not implemented', code: 'not_implemented' });
});

app.all('/exec', (req, res) => {
  res.set('Allow', 'POST');
  res.status(405).json({ error: 'Method not allowed', code: 'method_not_allowed' });
});

app.use((req, res) => {
  res.status(404).json({ error: 'Not found', code: 'not_found' });
});

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  const status = err.status || err.statusCode || 500;
  const code = status === 413 ? 'body_too_large' : status === 400 ? 'invalid_json' : 'internal_error';
  res.status(status).json({ error: status === 500 ? 'Internal error' : err.message, code });
});

const server = app.listen(opts.port, opts.host, () => {
  const a = server.address();
  process.stdout.write(JSON.stringify({ event: 'server.start', host: a.address, port: a.port, pid: process.pid }) + '\n');
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
