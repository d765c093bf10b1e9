// `npm run bench`: the one entry point for Seam's speed and size numbers. Prints a markdown table
// and writes it to bench/results.md. Load goes only to the local workerd on 127.0.0.1, bounded in
// request count.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { startEdge, WRITE_KEY } from "../tests/support/edge.mjs";
import { kb, measureSdk } from "../scripts/sdk-size.mjs";
import { sdkRows } from "./sdk.mjs";

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 400);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const WARMUP = 40;

function batchBody(run, n) {
  const now = new Date().toISOString();
  const batch = Array.from({ length: 20 }, (_, i) => ({
    type: "track",
    event: "Product Viewed",
    anonymousId: `bench-anon-${n % 50}`,
    messageId: `bench-${run}-${n}-${i}`,
    timestamp: now,
    properties: { product_id: `p${i}`, category: "Running Shoes", price: 129 },
    context: { page: { path: "/product" }, userAgent: "bench" },
  }));
  return JSON.stringify({ batch, sentAt: now, writeKey: WRITE_KEY });
}

// Native seam-core cost, measured by criterion (core/benches/ingest.rs, identity.rs, personalisation.rs)
// in one cargo call. Runs before the edge starts so the two don't share the CPU. Returns the
// directory criterion wrote its results to.
function runNativeBenches() {
  const root = new URL("..", import.meta.url);
  // cargo's progress and criterion's report go to stderr so stdout stays the table.
  execFileSync("cargo", ["bench", "-p", "seam-core", "--bench", "ingest", "--bench", "identity", "--bench", "personalisation"], { cwd: root, stdio: ["ignore", 2, 2] });
  const metadata = JSON.parse(execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], { cwd: root, encoding: "utf8" }));
  return `${metadata.target_directory}/criterion`;
}

// The median of one criterion bench, in microseconds.
function nativeMedianMicros(criterionDir, group, bench) {
  const estimates = JSON.parse(readFileSync(`${criterionDir}/${group}/${bench}/new/estimates.json`, "utf8"));
  return estimates.median.point_estimate / 1000;
}

async function load(label, count, makeRequest) {
  const latencies = [];
  let next = 0;
  let failures = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < count) {
        const n = next++;
        const t = performance.now();
        const res = await makeRequest(n);
        await res.arrayBuffer();
        if (!res.ok) failures++;
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
  return { label, rate: count / seconds, p50: pct(0.5), p99: pct(0.99), failures };
}

const rows = [];
const size = await measureSdk();
rows.push(["SDK wasm (wasm-opt -Oz)", `${kb(size.wasm.gzip)} gzip`, `${kb(size.wasm.brotli)} brotli, ${kb(size.wasm.raw)} raw`]);
rows.push(["SDK JS (entry + glue, minified)", `${kb(size.js.gzip)} gzip`, `${kb(size.js.brotli)} brotli, ${kb(size.js.raw)} raw`]);
// Seam vs peers (size, measured the same way), wasm breakdown, track() and load() in Chromium.
rows.push(...(await sdkRows()));
const criterionDir = runNativeBenches();
const nativeBatch = nativeMedianMicros(criterionDir, "ingest", "batch_20_events");
rows.push(["native: decode + validate + plan, 20-event batch", `${nativeBatch.toFixed(1)} µs median`, "target < 200 µs"]);
const nativeStitch = nativeMedianMicros(criterionDir, "identity", "stitch_50_identifiers");
rows.push(["native: stitch, 50-identifier fragment", `${nativeStitch.toFixed(1)} µs median`, "target < 50 µs"]);
const nativePartition = nativeMedianMicros(criterionDir, "identity", "partition_50_identifiers");
rows.push(["native: partition, 50-identifier component", `${nativePartition.toFixed(1)} µs median`, "the edge's recomputation per request"]);
const nativePersonalise = nativeMedianMicros(criterionDir, "personalisation", "update_one_event_full_horizon");
rows.push(["native: personalise one event (row parse + traits + segments + writes, 128-fact state)", `${nativePersonalise.toFixed(1)} µs median`, "target < 300 µs"]);

// Limits far above the load so the bench measures ingestion, not the rate limiter's 429s.
const edge = await startEdge("bench", { limits: { ip: 1_000_000, source: 1_000_000 } });
try {
  const run = Date.now();
  const health = () => fetch(`${edge.url}/health`);
  const batch = (n) => fetch(`${edge.url}/v1/batch`, { method: "POST", body: batchBody(run, n), headers: { "content-type": "text/plain" } });
  await load("warmup", WARMUP, (n) => (n % 2 ? health() : batch(-1 - n)));
  const noop = await load("no-op route (GET /health)", REQUESTS, health);
  const ingest = await load("20-event batch (POST /v1/batch)", REQUESTS, batch);
  for (const result of [noop, ingest]) {
    const extra = result === ingest ? `, ${(result.rate * 20).toFixed(0)} events/s` : "";
    rows.push([
      `edge: ${result.label}`,
      `${result.rate.toFixed(0)} req/s`,
      `p50 ${result.p50.toFixed(1)} ms, p99 ${result.p99.toFixed(1)} ms${extra}, ${result.failures} failed`,
    ]);
  }
  rows.push(["edge: ingest rate / no-op rate", `${((ingest.rate / noop.rate) * 100).toFixed(0)}%`, "target >= 25%"]);

  // An identify that merges two existing profiles (an anonymous visitor's and the user's).
  const MERGES = Math.min(REQUESTS, 200);
  const post = (event) => fetch(`${edge.url}/v1/batch`, { method: "POST", body: JSON.stringify({ writeKey: WRITE_KEY, batch: [event] }) });
  const now = Date.now();
  await load("setup", MERGES * 2, (n) => {
    const i = n >> 1;
    const ts = new Date(now + i).toISOString();
    return post(n % 2
      ? { type: "track", event: "Product Viewed", anonymousId: `merge-anon-${run}-${i}`, timestamp: ts }
      : { type: "identify", userId: `merge-user-${run}-${i}`, timestamp: ts, traits: { plan: "pro" } });
  });
  const merge = await load("identify merging two profiles", MERGES, (i) =>
    post({ type: "identify", userId: `merge-user-${run}-${i}`, anonymousId: `merge-anon-${run}-${i}`, timestamp: new Date(now + MERGES + i).toISOString() }));
  rows.push([
    "edge: identify that merges two profiles",
    `p50 ${merge.p50.toFixed(1)} ms`,
    `p99 ${merge.p99.toFixed(1)} ms, ${merge.rate.toFixed(0)} req/s, ${merge.failures} failed`,
  ]);
} finally {
  await edge.stop();
}

const table = [
  `Seam benchmarks — ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), local workerd via wrangler dev, ${REQUESTS} requests x ${CONCURRENCY} concurrent`,
  "",
  "| measure | value | detail |",
  "|---|---|---|",
  ...rows.map((r) => `| ${r.join(" | ")} |`),
  "",
].join("\n");
console.log(table);
writeFileSync(new URL("./results.md", import.meta.url), table);
