// What writing the archive as Parquet would cost against the gzipped NDJSON the Worker writes
// (#18: "Parquet preferred; NDJSON acceptable if Parquet costs too much Worker CPU: measure and
// say"). Builds bench/parquet (the production NDJSON path from seam-core, and the `parquet`
// crate's own writer, no Arrow) natively and for wasm32, then times both encodings in V8 (as
// workerd runs them) per claim of `PARQUET_ROWS` events (500, the most a claim holds), and
// reports the bytes the Parquet writer adds to a wasm module. Not part of `npm run bench`: it
// compiles the parquet crate (a few minutes). Run with `node bench/parquet.mjs`.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const root = new URL("..", import.meta.url).pathname;
const dir = join(root, "bench/parquet");
const target = process.env.CARGO_TARGET_DIR || join(root, "target/bench-parquet");
const ROWS = Number(process.env.PARQUET_ROWS ?? 500);
const env = { ...process.env, CARGO_TARGET_DIR: target };
const cargo = (...args) => execFileSync("cargo", args, { cwd: dir, env, stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" });

const native = cargo("run", "--release", "--quiet", "--", String(ROWS));
const wasmPath = join(target, "wasm32-unknown-unknown/release/seam_parquet_cost.wasm");
cargo("build", "--release", "--quiet", "--lib", "--target", "wasm32-unknown-unknown", "--no-default-features");
const without = readFileSync(wasmPath);
cargo("build", "--release", "--quiet", "--lib", "--target", "wasm32-unknown-unknown");
const withParquet = readFileSync(wasmPath);
const worker = readFileSync(join(root, "edge/build/index_bg.wasm"));

const { instance } = await WebAssembly.instantiate(withParquet, {});
const { encode } = instance.exports;
const rounds = Math.max(5, Math.round(100_000 / ROWS));
// Median of 5 timings of `rounds` claims, minus the same call with no claims (the rows' making).
const timed = (way) => {
  encode(way, ROWS, 3);
  const runs = [];
  let bytes = 0n;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    encode(way, ROWS, 0);
    const t1 = performance.now();
    bytes = encode(way, ROWS, rounds);
    const t2 = performance.now();
    runs.push((t2 - t1) - (t1 - t0));
  }
  const ms = runs.sort((a, b) => a - b)[2];
  return { us: (ms * 1000) / (rounds * ROWS), bytes: Number(bytes) / (rounds * ROWS) };
};
const kb = (b) => `${(b / 1024).toFixed(1)} KB`;
const rows = [];
const ndjson = timed(0);
rows.push([`archive encoding in V8 (wasm): gzipped NDJSON, claims of ${ROWS}`, `${ndjson.us.toFixed(2)} µs/event`, `${ndjson.bytes.toFixed(0)} B/event written (what the Worker writes today)`]);
for (const [name, way] of [["Parquet, uncompressed", 1], ["Parquet, Snappy", 2], ["Parquet, gzip", 3]]) {
  const r = timed(way);
  rows.push([`archive encoding in V8 (wasm): ${name}, claims of ${ROWS}`, `${r.us.toFixed(2)} µs/event`, `${r.bytes.toFixed(0)} B/event written; ${(r.us / ndjson.us).toFixed(2)}x the NDJSON's CPU`]);
}
rows.push([
  "archive encoding: wasm the Parquet writer adds",
  `+${kb(gzipSync(withParquet).length - gzipSync(without).length)} gzip`,
  `${kb(withParquet.length - without.length)} raw; the Worker's wasm is ${kb(gzipSync(worker).length)} gzip (${kb(worker.length)} raw) today`,
]);
for (const line of native.trim().split("\n")) rows.push(["archive encoding, native (same code)", line, ""]);
for (const row of rows) console.log(`| ${row.join(" | ")} |`);
