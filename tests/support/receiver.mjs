// A local HTTP receiver standing in for a destination's API (a webhook endpoint, GA4, Meta,
// Klaviyo): it records every request with its raw body and answers from a script, so tests can
// make it fail, throttle or accept, and check the payload shapes the real APIs document.
import { createServer } from "node:http";

/**
 * Starts a receiver on a free loopback port. `answer(request, n)` (n: 1 for the first request
 * to that path) returns `{status, headers?, body?}`; the default accepts everything with 200.
 */
export async function startReceiver(answer = () => ({ status: 200 })) {
  const requests = [];
  const seen = new Map();
  let respond = answer;
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      let json;
      try {
        json = JSON.parse(raw);
      } catch {
        json = undefined;
      }
      const url = new URL(req.url, "http://receiver");
      const n = (seen.get(url.pathname) ?? 0) + 1;
      seen.set(url.pathname, n);
      const request = { method: req.method, path: url.pathname, query: url.searchParams, headers: req.headers, raw, json, at: Date.now() };
      requests.push(request);
      const { status = 200, headers = {}, body = "{}" } = respond(request, n) ?? {};
      // Each call closes its connection: under load, idle kept-alive sockets would pile up in
      // workerd until it runs out of file descriptors.
      res.writeHead(status, { "content-type": "application/json", connection: "close", ...headers });
      res.end(typeof body === "string" ? body : JSON.stringify(body));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    requests,
    /** Replaces the answering script. */
    answer(fn) {
      respond = fn;
    },
    /** Requests so far to paths starting with `prefix`. */
    to(prefix) {
      return requests.filter((r) => r.path.startsWith(prefix));
    },
    /** Waits until `count` requests reached paths starting with `prefix`; returns them. */
    async wait(prefix, count, ms = 20_000) {
      const deadline = Date.now() + ms;
      while (Date.now() < deadline) {
        const got = requests.filter((r) => r.path.startsWith(prefix));
        if (got.length >= count) return got;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`receiver: ${requests.filter((r) => r.path.startsWith(prefix)).length} of ${count} requests to ${prefix} after ${ms} ms`);
    },
    close() {
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
