// `npm run bench`: the one entry point for Seam's speed and size numbers. Prints a markdown table
// and writes it to bench/results.md. Load goes only to the local workerd on 127.0.0.1, bounded in
// request count.
//
// BENCH_ONLY=edge node bench/run.mjs: only the edge section (ingest, merge, decisions and rendered
// pages, one wrangler dev run), skipping the SDK size/browser and native criterion benches (which
// take minutes); BENCH_ONLY=console: only the console over a million events (console.mjs);
// BENCH_ONLY=import: only the CSV import (import.mjs); BENCH_ONLY=scale: only shop traffic at
// multiples of a small shop's rate (scale.mjs). Any of them prints the table but leaves
// bench/results.md as it is.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { configuredSources, idCookie, root, settled, startEdge, WRITE_KEY } from "../tests/support/edge.mjs";
import { products } from "../demo-site/products.js";
import { kb, measureSdk } from "../scripts/sdk-size.mjs";
import { sdkRows } from "./sdk.mjs";
import { consoleRows } from "./console.mjs";
import { importRows } from "./import.mjs";
import { scaleRows } from "./scale.mjs";
import { startReceiver } from "../tests/support/receiver.mjs";

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 400);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const WARMUP = 40;
const QUEUED_ROUNDS = Number(process.env.BENCH_QUEUED_ROUNDS ?? 5);
const ONLY = process.env.BENCH_ONLY;

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
  const phases = {};
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
        // Phases the Worker reports (REPORT_TIMINGS): `name;dur=ms, ...`.
        for (const part of (res.headers.get("server-timing") ?? "").split(",")) {
          const [name, dur] = part.trim().split(";dur=");
          if (name && dur !== undefined) (phases[name] ??= []).push(Number(dur));
        }
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
  return { label, rate: count / seconds, p50: pct(0.5), p99: pct(0.99), failures, phases };
}

/** A table row of one `load` result: rate, then p50/p99 latency (and `extra`) and failures. */
function speedRow(result, extra = "") {
  return [
    `edge: ${result.label}`,
    `${result.rate.toFixed(0)} req/s`,
    `p50 ${result.p50.toFixed(1)} ms, p99 ${result.p99.toFixed(1)} ms${extra}, ${result.failures} failed`,
  ];
}

// Decisions and edge-rendered pages. Visitors with behaviour: anonymous IDs as the SDK's cookie
// carries them (at least 16 characters).
const VISITORS = 50;
const visitorId = (i) => `bench-visitor-${String(i + 1).padStart(6, "0")}`;
const PAGE = "/";
// Every HTML page of the site is routed to the Worker (wrangler.toml run_worker_first), so none can
// be served without it: the "static page" is an asset of about the same size (products.js,
// 2.7 KB vs index.html's 3.0 KB) that the assets layer serves with no Worker code at all.
const STATIC_ASSET = "/products.js";

/**
 * Rows for `/v1/decide` and the edge-rendered page, on a running edge: the demo shop's 12-item
 * catalogue is uploaded, 50 visitors each view 3-5 products, then four loads of REQUESTS each
 * (visitors cycled): the static asset, the page for an unknown visitor (the Worker renders
 * non-personal defaults), the page for a known visitor (`__Host-seam_id` cookie: personalised), and
 * `POST /v1/decide` for the page's two slots.
 */
async function decisionRows(edge, run) {
  const adminKey = readFileSync(`${root}/.dev.vars`, "utf8").match(/^ADMIN_KEY=(.*)$/m)?.[1].trim();
  const upload = await fetch(`${edge.url}/v1/admin/catalog`, {
    method: "POST",
    headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
    body: JSON.stringify({ items: products }),
  });
  const uploaded = await upload.text();
  if (upload.status !== 200 || JSON.parse(uploaded).stored !== products.length) throw new Error(`catalogue upload: ${upload.status} ${uploaded}`);

  // Visitor i views 3-5 distinct products across the categories, a minute apart, in the last 5 minutes.
  const now = Date.now();
  const views = await load("setup", VISITORS, (i) => {
    const count = 3 + (i % 3);
    const batch = Array.from({ length: count }, (_, k) => {
      const p = products[(i * 5 + k * 7) % products.length];
      return {
        type: "track",
        event: "Product Viewed",
        anonymousId: visitorId(i),
        messageId: `bench-view-${run}-${i}-${k}`,
        timestamp: new Date(now - (count - k) * 60_000).toISOString(),
        properties: { product_id: p.product_id, category: p.category, name: p.name, price: p.price },
        context: { page: { path: "/product" }, userAgent: "bench" },
      };
    });
    return fetch(`${edge.url}/v1/batch`, { method: "POST", body: JSON.stringify({ writeKey: WRITE_KEY, batch }), headers: { "content-type": "text/plain" } });
  });
  if (views.failures) throw new Error(`${views.failures} of ${VISITORS} visitors' events were refused`);
  await settled(edge.url, 60_000); // their traits, segments and KV snapshots

  const staticAsset = () => fetch(`${edge.url}${STATIC_ASSET}`);
  const strangerPage = () => fetch(`${edge.url}${PAGE}`);
  // Each visitor's browser holds the cookie the Worker sealed for its ID.
  const visitorCookies = Array.from({ length: VISITORS }, (_, i) => idCookie(visitorId(i)));
  const visitorPage = (n) => fetch(`${edge.url}${PAGE}`, { headers: { cookie: visitorCookies[n % VISITORS] } });
  // A page's decide call carries the browser's cookie: a browser source believes no anonymous ID
  // from a body, so without it every decision would be the non-personal answer.
  const decide = (n) =>
    fetch(`${edge.url}/v1/decide`, {
      method: "POST",
      headers: { "content-type": "application/json", cookie: visitorCookies[n % VISITORS] },
      body: JSON.stringify({ writeKey: WRITE_KEY, anonymousId: visitorId(n % VISITORS), slots: ["recommended-for-you", "discount-banner"] }),
    });

  // Check what is measured: the asset bypasses the Worker, the pages carry the slots as rendered.
  const rendered = (html) => html.match(/data-seam-slot="recommended-for-you"[^>]*data-seam-rendered="([^"]+)"/)?.[1] ?? "unrendered";
  const asset = await staticAsset();
  const assetBytes = (await asset.arrayBuffer()).byteLength;
  if (!asset.ok || /text\/html/.test(asset.headers.get("content-type"))) throw new Error(`${STATIC_ASSET}: ${asset.status} ${asset.headers.get("content-type")}`);
  const stranger = await (await strangerPage()).text();
  if (rendered(stranger) !== "default") throw new Error(`unknown visitor's page rendered ${rendered(stranger)}`);
  const variants = {};
  let pageBytes = 0;
  for (let i = 0; i < VISITORS; i++) {
    const html = await (await visitorPage(i)).text();
    variants[rendered(html)] = (variants[rendered(html)] ?? 0) + 1;
    pageBytes = Math.max(pageBytes, Buffer.byteLength(html));
  }
  if (!variants.personalised) throw new Error(`no visitor got a personalised page: ${JSON.stringify(variants)}`);
  const decided = await (await decide(0)).json();
  if (!decided.profileId) throw new Error(`the decision row would time the non-personal answer: ${JSON.stringify(decided).slice(0, 200)}`);
  const mix = Object.entries(variants).map(([v, n]) => `${n} ${v}`).join(", ");

  const kinds = [staticAsset, strangerPage, visitorPage, decide];
  await load("warmup", WARMUP, (n) => kinds[n % kinds.length](n));
  // Each load starts once the previous one's work after the response (exposure logs) is done.
  const measure = async (label, makeRequest) => {
    await settled(edge.url, 60_000);
    return load(label, REQUESTS, makeRequest);
  };
  const plain = await measure(`static asset, no Worker code (GET ${STATIC_ASSET}, ${kb(assetBytes)})`, staticAsset);
  const defaults = await measure(`page for an unknown visitor (GET ${PAGE}, no cookie: Worker renders defaults)`, strangerPage);
  const personal = await measure(`personalised page (GET ${PAGE} with the ID cookie, ${kb(pageBytes)})`, visitorPage);
  const decisions = await measure("decision (POST /v1/decide, 2 slots)", decide);
  // Real shops decide while shoppers browse: the same pages with product views arriving alongside
  // (one view per request, the catalogue's products, the same visitors). Each view's evidence
  // changes what decisions read, so it tests the shared-input cache under writes.
  await settled(edge.url, 60_000);
  const viewNow = (n) => {
    const p = products[n % products.length];
    const event = {
      type: "track", event: "Product Viewed", anonymousId: visitorId(n % VISITORS), messageId: `bench-browse-${run}-${n}`,
      timestamp: new Date().toISOString(), properties: { product_id: p.product_id, category: p.category, name: p.name, price: p.price },
    };
    return fetch(`${edge.url}/v1/batch`, { method: "POST", body: JSON.stringify({ writeKey: WRITE_KEY, batch: [event] }), headers: { "content-type": "text/plain" } });
  };
  // Two shoppers' worth of views at a time, for as long as the pages are measured.
  let browsingDone = false;
  let viewsSent = 0;
  const viewsStarted = performance.now();
  const shoppers = Array.from({ length: 2 }, async () => {
    while (!browsingDone) await (await viewNow(viewsSent++)).arrayBuffer();
  });
  const browsing = await load("personalised page while shoppers browse", REQUESTS, visitorPage);
  browsingDone = true;
  await Promise.all(shoppers);
  const viewRate = viewsSent / ((performance.now() - viewsStarted) / 1000);
  // The same page with the shared-input cache off (`cacheSeconds: 0`): every decision reads its
  // co-occurrence, listings and popular items from D1, as on an isolate's first request or with a
  // catalogue too large to stay warm.
  const recommendations = { ...JSON.parse(readFileSync(`${root}/config/recommendations.json`, "utf8")), cacheSeconds: 0 };
  const off = await fetch(`${edge.url}/v1/admin/personalisation`, {
    method: "PUT",
    headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
    body: JSON.stringify({ recommendations }),
  });
  if (off.status !== 200) throw new Error(`config upload: ${off.status} ${await off.text()}`);
  const uncached = await measure(`personalised page, every decision reading D1 (cacheSeconds: 0)`, visitorPage);
  const pct = (a, b) => `${((a.rate / b.rate) * 100).toFixed(0)}%`;
  return [
    speedRow(plain),
    speedRow(defaults),
    speedRow(personal, `, ${VISITORS} visitors cycled (${mix})`),
    speedRow(decisions, `, ${VISITORS} visitors cycled`),
    speedRow(browsing, `, while ${viewRate.toFixed(0)} product views/s arrive (one-event batches from 2 concurrent shoppers)`),
    speedRow(uncached, `, ${VISITORS} visitors cycled`),
    ["edge: personalised page rate / static asset rate", pct(personal, plain), "target >= 50% (no HTML page can bypass the Worker: the static row is a same-size asset); shared inputs cached per isolate (cacheSeconds: 10), profile from KV"],
    ["edge: same, every decision reading D1", pct(uncached, plain), "cacheSeconds: 0: the cold-isolate or large-catalogue case"],
    ["edge: personalised page rate / unknown-visitor page rate", pct(personal, defaults), "the profile read and personal decision on top of rendering"],
  ];
}

/**
 * Destinations: the same 20-event batches with three destinations taking them (a webhook, GA4
 * and Klaviyo, all pointed at a local receiver that answers 200 at once), then how fast the
 * queue consumer delivered what that load made, then the same load again with the destinations
 * removed: the fair baseline (the profiles are as warm as for the routed run). Locally the
 * consumer runs in the same workerd as ingest, so the routed run shares the CPU with delivery.
 */
async function destinationRows(edge, batch) {
  const secrets = readFileSync(`${root}/.dev.vars`, "utf8");
  const adminKey = secrets.match(/^ADMIN_KEY=(.*)$/m)[1].trim();
  const call = (method, name, body) => fetch(`${edge.url}/v1/admin/destinations/${name}`, {
    method,
    headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  });
  const receiver = await startReceiver();
  try {
    const filter = { events: ["Product Viewed"] };
    const destinations = {
      hook: { type: "webhook", settings: { url: `${receiver.url}/hook`, secret: "bench-secret-0123456789" }, filter },
      ga4: { type: "ga4", settings: { measurementId: "G-BENCH", apiSecret: "s", baseUrl: `${receiver.url}/ga4` }, filter },
      klaviyo: { type: "klaviyo", settings: { apiKey: "pk_bench", baseUrl: `${receiver.url}/klaviyo` }, filter },
    };
    for (const [name, entry] of Object.entries(destinations)) {
      const put = await call("PUT", name, entry);
      if (!put.ok) throw new Error(`destination ${name}: ${put.status} ${await put.text()}`);
    }
    // Fresh messageIds for each run: earlier runs' would be duplicates.
    const started = performance.now();
    const routed = await load("20-event batch, 3 destinations taking every event", REQUESTS, (n) => batch(1_000_000 + n));
    const expected = REQUESTS * 20 * 3;
    const deadline = Date.now() + 300_000;
    while (receiver.requests.length < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    const delivered = receiver.requests.length;
    const seconds = (performance.now() - started) / 1000;
    for (const name of Object.keys(destinations)) await call("DELETE", name);
    await new Promise((r) => setTimeout(r, 1000));
    const plain = await load("20-event batch, no destinations (same warm state)", REQUESTS, (n) => batch(2_000_000 + n));
    return [
      speedRow(routed, `, ${(routed.rate * 20).toFixed(0)} events/s`),
      speedRow(plain, `, ${(plain.rate * 20).toFixed(0)} events/s`),
      ["edge: ingest rate with 3 destinations / without", `${((routed.rate / plain.rate) * 100).toFixed(0)}%`, "target >= 90% (ingest loses <= 10%); locally the consumer shares the CPU"],
      ["edge: deliveries through the queue to a local no-op receiver", `${(delivered / seconds).toFixed(0)} deliveries/s`, `${delivered} of ${expected} delivered ${seconds.toFixed(1)} s after the load began (parcels of up to 50, 6 calls at a time per invocation)`],
    ];
  } finally {
    await receiver.close();
  }
}

const rows = [];
if (!ONLY) {
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
}

// Limits far above the load so the bench measures ingestion, not the rate limiter's 429s.
// The dev source as configured (a browser source: queued by default), and a copy of it that
// stores before it answers ("ingest": "direct", the server sources' default).
const DIRECT_KEY = "seam_bench_direct_key";
const benchSources = () => {
  const sources = configuredSources();
  return { ...sources, [DIRECT_KEY]: { ...sources[WRITE_KEY], id: "bench-direct", ingest: "direct" } };
};
const edge = ONLY && ONLY !== "edge" ? null : await startEdge("bench", { limits: { ip: 1_000_000, source: 1_000_000 }, vars: { REPORT_TIMINGS: "true" }, sources: benchSources() });
const directBody = (run, n) => batchBody(`${run}-direct`, n).replace(`"writeKey":"${WRITE_KEY}"`, `"writeKey":"${DIRECT_KEY}"`);

/**
 * 20-event batches to the dev source, which queues (a browser source's default): the rate the
 * edge answers at, and the rate the queue's consumer stores them at (until every event is in
 * D1), which locally shares the CPU with the answering. The ratio to the no-op route is the
 * median of QUEUED_ROUNDS rounds, each a no-op load then a queued one (and their storing): one
 * round moved between 29% and 64% on the same machine, with the no-op rate itself between 261
 * and 428 req/s. The first consumer invocations are warmed before the rounds.
 */
async function queuedRows(edge, run, health) {
  const queuedBatch = (tag) => (n) => fetch(`${edge.url}/v1/batch`, { method: "POST", body: batchBody(`${run}-${tag}`, n), headers: { "content-type": "text/plain" } });
  await load("queued warmup", WARMUP, queuedBatch("queued-warmup"));
  await settled(edge.url, 300_000);
  const rounds = [];
  for (let round = 0; round < QUEUED_ROUNDS; round++) {
    const noop = await load("no-op route (GET /health)", REQUESTS, health);
    const started = performance.now();
    const tag = `queued-${round}`;
    const queued = await load("20-event batch (POST /v1/batch; a browser source: queued)", REQUESTS, queuedBatch(tag));
    // Waits on /health, not on D1: reading the SQLite file from this process while the consumer
    // writes can make its batch fail with SQLITE_BUSY and wait 10 s for its retry.
    await settled(edge.url, 300_000);
    const seconds = (performance.now() - started) / 1000;
    const [{ n: stored }] = await edge.query("SELECT COUNT(*) AS n FROM events WHERE source_id = 'demo-site' AND message_id LIKE ?", `bench-${run}-${tag}-%`);
    rounds.push({ noop, queued, seconds, stored, ratio: queued.rate / noop.rate });
  }
  const byRatio = [...rounds].sort((a, b) => a.ratio - b.ratio);
  const median = byRatio[byRatio.length >> 1];
  const { noop, queued, seconds, stored } = median;
  const each = rounds.map((r) => `${(r.ratio * 100).toFixed(0)}% (${r.queued.rate.toFixed(0)} / ${r.noop.rate.toFixed(0)})`).join(", ");
  return {
    noop,
    rows: [
      speedRow(noop, `, the median round's`),
      speedRow(queued, `, answer phases (mean wall ms) ${Object.entries(queued.phases).map(([k, v]) => `${k} ${(v.reduce((a, b) => a + b, 0) / v.length).toFixed(1)}`).join(", ")}; stored: ${stored} of ${REQUESTS * 20} events, their profiles refreshed, ${seconds.toFixed(1)} s after the first request (${(stored / seconds).toFixed(0)} events/s sustained); the median round's`),
      ["edge: ingest rate / no-op rate", `${(median.ratio * 100).toFixed(0)}%`, `target >= 35% (#19); median of ${rounds.length} rounds, each a no-op load then a queued one: ${each}; browser sources' default: the answer comes after the queue send, the consumer stores 25 requests at a time`],
    ],
  };
}

/** The isolate's finished after-response and queue work by kind (`/health` with REPORT_TIMINGS). */
const finishedWork = async (edge) => (await (await fetch(`${edge.url}/health`)).json()).finished ?? {};

/**
 * Where an ingest request's time goes: the phases it reports (wall ms; a Worker's clock moves
 * only at I/O, so this is waiting on D1, the queue and the body, not CPU), and the work it leaves
 * for after its response or for the queues, per request, from `/health` before and after.
 */
function breakdownRows(result, before, after, requests) {
  const mean = (v) => v.reduce((a, b) => a + b, 0) / v.length;
  const phases = Object.entries(result.phases).map(([name, v]) => `${name} ${mean(v).toFixed(1)}`);
  const work = Object.entries(after)
    .map(([kind, { n, ms }]) => [kind, n - (before[kind]?.n ?? 0), ms - (before[kind]?.ms ?? 0)])
    .filter(([, n]) => n > 0)
    .map(([kind, n, ms]) => `${kind} ${(ms / requests).toFixed(1)} (${n} runs)`);
  return [
    ["edge: ingest request phases (mean wall ms)", phases.join(", "), "read = body and key checks; store = the one D1 batch; resolve = identity after it; answer = encoding"],
    ["edge: work after each ingest response (wall ms per request)", work.join(", "), "refresh = profile state, segments, KV snapshot (spaced per profile); archive send = keys gathered per isolate for 250 ms; queue rows = consumer invocations"],
  ];
}
if (edge) try {
  const run = Date.now();
  const health = () => fetch(`${edge.url}/health`);
  // Stored before the answer: the request's own D1 work, phase by phase.
  const batch = (n) => fetch(`${edge.url}/v1/batch`, { method: "POST", body: directBody(run, n), headers: { "content-type": "text/plain" } });
  await load("warmup", WARMUP, (n) => (n % 2 ? health() : batch(-1 - n)));
  const queuedResult = await queuedRows(edge, run, health);
  const noop = queuedResult.noop;
  rows.push(...queuedResult.rows);
  await settled(edge.url, 60_000);
  const workBefore = await finishedWork(edge);
  const ingest = await load("20-event batch stored before the answer (\"ingest\": \"direct\")", REQUESTS, batch);
  await settled(edge.url, 60_000);
  // The archive's consumer gathers messages for up to 5 s.
  await new Promise((r) => setTimeout(r, 6000));
  const workAfter = await finishedWork(edge);
  rows.push(speedRow(ingest, `, ${(ingest.rate * 20).toFixed(0)} events/s`));
  rows.push(["edge: stored-before-answer ingest rate / no-op rate", `${((ingest.rate / noop.rate) * 100).toFixed(0)}%`, "server sources' default, and any source with \"ingest\": \"direct\""]);
  rows.push(...breakdownRows(ingest, workBefore, workAfter, REQUESTS));
  rows.push(...(await destinationRows(edge, batch)));

  // An identify that merges two existing profiles (an anonymous visitor's and the user's),
  // stored before the answer so the answer's time includes the merge.
  const MERGES = Math.min(REQUESTS, 200);
  const post = (event) => fetch(`${edge.url}/v1/batch`, { method: "POST", body: JSON.stringify({ writeKey: DIRECT_KEY, batch: [event] }) });
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

  // `/v1/decide` and the edge-rendered page vs the same-size static asset, same run.
  await settled(edge.url, 60_000);
  rows.push(...(await decisionRows(edge, run)));
} catch (error) {
  // The Worker's own log says what it was doing when a call failed or hung (the full bench
  // has twice seen an admin call get no answer for 300 s; SEAM_EDGE_LOG=<file> keeps it all).
  console.error(`the edge's last output:\n${edge.output().slice(-20_000)}`);
  throw error;
} finally {
  await edge.stop();
}
// Each on a fresh edge of its own, after the load above has stopped: the console over a million
// events, and a CSV import (with D1's bytes per stored event).
if (!ONLY || ONLY === "console") rows.push(...(await consoleRows()));
if (!ONLY || ONLY === "import") rows.push(...(await importRows()));
if (!ONLY || ONLY === "scale") {
  rows.push(...(await scaleRows()));
  // The same traffic with the profiles' state over three D1 databases (docs/scale.md).
  rows.push(...(await scaleRows({ shards: 3, steps: [100, 300] })));
}

// The change against the committed results: the value a row had there, and the difference when
// both are one number with the same unit.
const committed = new Map();
try {
  for (const line of readFileSync(new URL("./results.md", import.meta.url), "utf8").split("\n")) {
    const cells = line.split(" | ");
    if (cells.length >= 3 && line.startsWith("| ")) committed.set(cells[0].slice(2), cells[1]);
  }
} catch {
  // no committed results yet
}
function change(measure, value) {
  const was = committed.get(measure);
  if (was === undefined) return "new";
  const number = (text) => text.match(/^(-?[\d.]+)\s*(.*)$/);
  const [now, then] = [number(value), number(was)];
  if (!now || !then || now[2] !== then[2]) return was === value ? "same" : `was ${was}`;
  const delta = Number(now[1]) - Number(then[1]);
  const sign = delta > 0 ? "+" : "";
  return `${sign}${Number(delta.toFixed(1))} ${now[2]} (was ${then[1]})`.trim();
}

const table = [
  `Seam benchmarks — ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), local workerd via wrangler dev, ${REQUESTS} requests x ${CONCURRENCY} concurrent`,
  "",
  "| measure | value | detail | change against the committed results |",
  "|---|---|---|---|",
  ...rows.map((r) => `| ${[...r, change(r[0], r[1])].join(" | ")} |`),
  "",
].join("\n");
console.log(table);
if (!ONLY) writeFileSync(new URL("./results.md", import.meta.url), table);
