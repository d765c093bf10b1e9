// scratch: ingest vs no-op only
import { startEdge, WRITE_KEY } from "../tests/support/edge.mjs";
const REQUESTS = 400, CONCURRENCY = 8;
function batchBody(run, n) {
  const now = new Date().toISOString();
  const batch = Array.from({ length: 20 }, (_, i) => ({ type: "track", event: "Product Viewed", anonymousId: `bench-anon-${n % 50}`, messageId: `bench-${run}-${n}-${i}`, timestamp: now, properties: { product_id: `p${i}`, category: "Running Shoes", price: 129 }, context: { page: { path: "/product" }, userAgent: "bench" } }));
  return JSON.stringify({ batch, sentAt: now, writeKey: WRITE_KEY });
}
async function load(count, makeRequest) {
  const lat = []; let next = 0; const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => { while (next < count) { const n = next++; const t = performance.now(); const r = await makeRequest(n); await r.arrayBuffer(); lat.push(performance.now() - t); } }));
  lat.sort((a, b) => a - b);
  return { rate: count / ((performance.now() - t0) / 1000), p50: lat[Math.floor(lat.length / 2)] };
}
const edge = await startEdge("bench", { limits: { ip: 1_000_000, source: 1_000_000 } });
const run = Date.now();
const health = () => fetch(`${edge.url}/health`);
const batch = (n) => fetch(`${edge.url}/v1/batch`, { method: "POST", body: batchBody(run, n), headers: { "content-type": "text/plain" } });
await load(40, (n) => (n % 2 ? health() : batch(-1 - n)));
const a = await load(REQUESTS, health), b = await load(REQUESTS, batch);
console.log(`noop ${a.rate.toFixed(0)} ingest ${b.rate.toFixed(0)} p50 ${b.p50.toFixed(0)} ratio ${(100 * b.rate / a.rate).toFixed(0)}%`);
await edge.stop();
