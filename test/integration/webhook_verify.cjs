// Verifies webhook deliveries with the npm `standardwebhooks` library (the
// Standard Webhooks reference implementation for JavaScript), pinned in
// packaging/cloudflare/package.json: an implementation independent of
// cap-server's and of capkit's.
//
// stdin: JSON [{"secret": "whsec_...", "body_b64": "...", "headers": {...}}, ...]
// stdout: JSON [{"ok": true, "type": "<event type>"} | {"ok": false, "error": "..."}, ...]
"use strict";
const path = require("path");
const { createRequire } = require("module");

const cf = path.resolve(__dirname, "..", "..", "packaging", "cloudflare", "package.json");
const { Webhook } = createRequire(cf)("standardwebhooks");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((c) => {
    try {
      // The exact bytes received: verify() signs what it is given.
      const event = new Webhook(c.secret).verify(Buffer.from(c.body_b64, "base64"), c.headers);
      return { ok: true, type: event && event.type };
    } catch (e) {
      return { ok: false, error: String(e && e.message) };
    }
  });
  process.stdout.write(JSON.stringify(out));
});
