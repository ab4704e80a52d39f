// Receive the gateway's webhooks in Node.js: verify the Standard Webhooks signature first.
//
//   WEBHOOK_SECRET=whsec_... node verify-webhook.mjs      # listens on 127.0.0.1:8080
//
// Only Node's built-in crypto: the signature is HMAC-SHA256 over
// `${webhook-id}.${webhook-timestamp}.${raw body}` with the base64 key after `whsec_`, sent as
// space-separated `v1,<base64>` values. (The npm package `standardwebhooks` does the same:
// `new Webhook(secret).verify(body, headers)`.) Answer 2xx quickly, and deduplicate on
// `webhook-id`: a retry or a redelivery carries the same id.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const TOLERANCE_SECONDS = 5 * 60;

export function verify(secret, headers, body, now = Date.now() / 1000) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures) throw new Error("missing webhook headers");
  if (!/^\d+$/.test(timestamp) || Math.abs(now - Number(timestamp)) > TOLERANCE_SECONDS) {
    throw new Error("timestamp too old or too new");
  }
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = createHmac("sha256", key)
    .update(Buffer.concat([Buffer.from(`${id}.${timestamp}.`), body]))
    .digest();
  const matches = signatures.split(" ").some((candidate) => {
    const [version, signature] = candidate.split(",", 2);
    const given = Buffer.from(signature ?? "", "base64");
    return version === "v1" && given.length === expected.length && timingSafeEqual(given, expected);
  });
  if (!matches) throw new Error("no valid signature");
  return JSON.parse(body.toString("utf8"));
}

function serve(port) {
  const seen = new Set(); // a real receiver keeps this in its database
  createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      let event;
      try {
        event = verify(process.env.WEBHOOK_SECRET, request.headers, Buffer.concat(chunks));
      } catch {
        response.writeHead(400).end();
        return;
      }
      if (!seen.has(request.headers["webhook-id"])) {
        seen.add(request.headers["webhook-id"]);
        console.log(JSON.stringify(event, null, 2));
      }
      response.writeHead(204).end();
    });
  }).listen(port, "127.0.0.1");
}

if (process.argv[2] === "--check") {
  // {"secret", "headers", "body" (base64)} on stdin: print the event, or exit 1.
  const chunks = [];
  process.stdin.on("data", (chunk) => chunks.push(chunk));
  process.stdin.on("end", () => {
    const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    try {
      const event = verify(input.secret, input.headers, Buffer.from(input.body, "base64"));
      console.log(JSON.stringify(event));
    } catch (error) {
      console.error(error.message);
      process.exitCode = 1;
    }
  });
} else if (import.meta.url === `file://${process.argv[1]}`) {
  serve(Number(process.env.PORT ?? 8080));
}
