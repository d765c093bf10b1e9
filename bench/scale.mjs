// Shop traffic at multiples of a small shop's rate, open loop, on a fresh edge: where does the
// local stack saturate, and what does each stored event cost in D1? Runs alone with
// `node bench/scale.mjs`; `SCALE_STEPS` (comma-separated multiples) and `SCALE_SECONDS` size it;
// `SCALE_SHARDS` spreads the profiles' state over that many D1 databases.
//
// The base rate is #18's small shop: 65,000 events a day (0.75 events/s). Shoppers browse as the
// demo shop's pages report them: a page view, product views, sometimes a cart, a checkout and an
// order with an identify; the SDK sends what a page queued in batches of one to four events.
// Requests are sent on a fixed schedule whatever the answers (open loop), so a saturated stack
// shows as latency, failures and a backlog of work after the responses, not as a slower sender.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { root, settled, startEdge, WRITE_KEY } from "../tests/support/edge.mjs";

const BASE_EVENTS_PER_SECOND = 65_000 / 86_400;
const STEPS = (process.env.SCALE_STEPS ?? "1,10,100,300,1000").split(",").map(Number);
// Profile shards: the profiles' personalisation state over this many D1 databases (docs/scale.md).
const SHARDS = Number(process.env.SCALE_SHARDS ?? 1);
const SECONDS = Number(process.env.SCALE_SECONDS ?? 15);
/** Requests in flight at most: past this the sender counts a request as refused. */
const MAX_IN_FLIGHT = 256;

/** One shopper's visit as the SDK would send it: batches of events. */
function visit(run, shopper, visitNo) {
  const anonymousId = `scale-${run}-${shopper}`;
  const now = new Date().toISOString();
  let n = 0;
  const event = (type, fields) => ({ type, anonymousId, messageId: `scale-${run}-${shopper}-${visitNo}-${n++}`, timestamp: now, context: { page: { path: "/" } }, ...fields });
  const product = () => `p${Math.floor(Math.random() * 200)}`;
  const events = [event("page", { name: "Home" })];
  const views = 1 + Math.floor(Math.random() * 4);
  for (let i = 0; i < views; i++) {
    events.push(event("track", { event: "Product Viewed", properties: { product_id: product(), category: "Running Shoes", price: 99 } }));
  }
  if (Math.random() < 0.4) events.push(event("track", { event: "Product Added", properties: { product_id: product(), price: 99, quantity: 1 } }));
  if (Math.random() < 0.2) events.push(event("track", { event: "Checkout Started", properties: { revenue: 99 } }));
  if (Math.random() < 0.1) {
    events.push(event("identify", { traits: { email: `shopper-${run}-${shopper}@shop.example` } }));
    events.push(event("track", { event: "Order Completed", properties: { order_id: `o-${run}-${shopper}-${visitNo}`, revenue: 99, currency: "EUR" } }));
  }
  const batches = [];
  while (events.length) batches.push(events.splice(0, 1 + Math.floor(Math.random() * 4)));
  return batches;
}

/**
 * Bytes of the edge's D1 by table, indexes counted with their table. D1 refuses PRAGMAs, so a
 * copy of the local database file (with its WAL) is checkpointed and read with SQLite's `dbstat`.
 */
export function d1Tables(state) {
  return d1Files(state).reduce((all, tables) => {
    for (const [name, bytes] of Object.entries(tables)) all[name] = (all[name] ?? 0) + bytes;
    return all;
  }, {});
}

/** [`d1Tables`] of each local D1 database (`DB` and any profile shards), one object per file. */
export function d1Files(state) {
  const dir = join(state, "v3/d1/miniflare-D1DatabaseObject");
  const files = readdirSync(dir).filter((f) => f.endsWith(".sqlite") && f !== "metadata.sqlite");
  return files.map((file) => d1File(dir, file));
}

function d1File(dir, file) {
  const copy = mkdtempSync(join(tmpdir(), "seam-d1-"));
  try {
    for (const suffix of ["", "-wal"]) if (existsSync(join(dir, file + suffix))) copyFileSync(join(dir, file + suffix), join(copy, "db.sqlite" + suffix));
    const script = [
      "import json, sqlite3, sys",
      "c = sqlite3.connect(sys.argv[1])",
      "c.execute('PRAGMA wal_checkpoint(TRUNCATE)')",
      "rows = c.execute(\"SELECT COALESCE(s.tbl_name, d.name), SUM(d.pgsize) FROM dbstat d LEFT JOIN sqlite_schema s ON s.name = d.name GROUP BY 1\").fetchall()",
      "print(json.dumps(dict(rows)))",
    ].join("\n");
    return JSON.parse(execFileSync("python3", ["-c", script, join(copy, "db.sqlite")], { encoding: "utf8" }));
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
}

/** D1's growth since `empty` per stored event, and the largest tables' shares of it. */
export function bytesPerEvent(tables, empty, events) {
  const grown = Object.entries(tables)
    .map(([name, bytes]) => [name, bytes - (empty[name] ?? 0)])
    .filter(([, bytes]) => bytes > 0)
    .sort((a, b) => b[1] - a[1]);
  const bytes = grown.reduce((sum, [, b]) => sum + b, 0);
  return { bytes, perEvent: Math.round(bytes / Math.max(1, events)), tables: grown.slice(0, 8).map(([name, b]) => `${name} ${Math.round(b / Math.max(1, events))}`).join(", ") };
}

/**
 * Runs the sweep until every archived event is out of D1 (or two minutes pass), for an edge
 * started with `HOT_EVENT_HOURS = "0"` and `ARCHIVE_SETTLE_SECONDS = "0"`: what D1 holds once
 * events are past the hot window.
 */
export async function compact(edge) {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const [{ left }] = await edge.query("SELECT COUNT(*) AS left FROM events");
    const [{ unarchived }] = await edge.query("SELECT COUNT(*) AS unarchived FROM events WHERE archived_at IS NULL");
    if (left === 0 || Date.now() > deadline) break;
    if (unarchived === 0) await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("*/5 * * * *")}`);
    else await new Promise((r) => setTimeout(r, 500));
  }
}

/** Sends shop traffic at `multiple` x the base rate for SECONDS; what was offered and what came back. */
export async function step(edge, run, multiple) {
  const eventsPerSecond = BASE_EVENTS_PER_SECOND * multiple;
  // Visits are generated ahead and their batches interleaved, as many shoppers browse at once.
  const queue = [];
  let shopper = 0;
  let planned = 0;
  while (planned < eventsPerSecond * SECONDS) {
    for (const batch of visit(run, `${multiple}-${shopper}`, 0)) {
      queue.splice(Math.floor(Math.random() * (queue.length + 1)), 0, batch);
      planned += batch.length;
    }
    shopper++;
  }
  const requestsPerSecond = queue.length / SECONDS;
  const latencies = [];
  let failures = 0;
  const statuses = {};
  let refused = 0;
  let accepted = 0;
  let inFlight = 0;
  const pending = [];
  const started = performance.now();
  for (let i = 0; i < queue.length; i++) {
    const due = started + (i / requestsPerSecond) * 1000;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    if (inFlight >= MAX_IN_FLIGHT) {
      refused++;
      continue;
    }
    inFlight++;
    const t = performance.now();
    const batch = queue[i];
    pending.push(
      fetch(`${edge.url}/v1/batch`, { method: "POST", headers: { "content-type": "text/plain" }, body: JSON.stringify({ writeKey: WRITE_KEY, batch }) })
        .then(async (res) => {
          const body = await res.json().catch(() => ({}));
          if (!res.ok) {
            failures++;
            const key = `${res.status}${body.code ? ` ${body.code}` : ""}`;
            statuses[key] = (statuses[key] ?? 0) + 1;
          }
          accepted += (body.results ?? []).filter((r) => r.status === "accepted").length;
        }, () => {
          failures++;
          statuses.network = (statuses.network ?? 0) + 1;
        })
        .finally(() => {
          inFlight--;
          latencies.push(performance.now() - t);
        }),
    );
  }
  await Promise.all(pending);
  const sendSeconds = (performance.now() - started) / 1000;
  // Work left after the responses (profile refreshes): how long until the stack caught up.
  const settling = performance.now();
  await settled(edge.url, 120_000).catch(() => {});
  const backlog = (performance.now() - settling) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { multiple, eventsPerSecond, offered: planned, accepted, requests: queue.length, failures, statuses, refused, seconds: sendSeconds, backlog, p50: pct(0.5), p99: pct(0.99) };
}

/** Rows: one per multiple, then where it saturated and D1's bytes per stored event. */
export async function scaleRows({ shards = SHARDS, steps = STEPS } = {}) {
  const SHARDS = shards;
  const STEPS = steps;
  const label = (text) => (SHARDS > 1 ? `${text}, ${SHARDS} profile shards` : text);
  // A hot window of 0 hours: compaction takes whatever is archived, so the second reading is
  // what D1 holds per event once events are past the window (24 hours by default).
  const edge = await startEdge(`bench-scale-${SHARDS}`, { limits: { ip: 1_000_000, source: 1_000_000 }, vars: { HOT_EVENT_HOURS: "0", ARCHIVE_SETTLE_SECONDS: "0" }, profileShards: SHARDS });
  const state = join(root, "tests/.tmp", `bench-scale-${SHARDS}-${process.pid}`);
  const rows = [];
  try {
    const run = Date.now();
    const empty = d1Tables(state);
    const emptyFiles = d1Files(state);
    let saturated;
    for (const multiple of STEPS) {
      const r = await step(edge, run, multiple);
      // Queued events count as stored once the consumer caught up: over the sending and the
      // catch-up after it.
      const acceptedRate = r.accepted / (r.seconds + r.backlog);
      const ok = r.failures <= r.requests / 100 && r.refused === 0 && r.p99 < 1000 && r.backlog < 5;
      if (!ok && !saturated) saturated = r;
      rows.push([
        label(`scale: ${multiple}x a small shop (${r.eventsPerSecond.toFixed(1)} events/s offered)`),
        `${acceptedRate.toFixed(0)} events/s stored`,
        `${r.requests} requests of 1-4 events in ${r.seconds.toFixed(1)} s, p50 ${r.p50.toFixed(0)} ms, p99 ${r.p99.toFixed(0)} ms, ${r.failures} failed${r.failures ? ` (${Object.entries(r.statuses).map(([k, v]) => `${k}: ${v}`).join(", ")})` : ""}, ${r.refused} not sent (${MAX_IN_FLIGHT} in flight), queued events stored and after-response work done ${r.backlog.toFixed(1)} s after the last answer`,
      ]);
      if (r.refused > 0 || r.failures > r.requests / 10) break;
    }
    const [{ n: events }] = await edge.query("SELECT COUNT(*) AS n FROM events");
    const perEvent = (tables) => bytesPerEvent(tables, empty, events);
    const hot = perEvent(d1Tables(state));
    rows.push([
      label("scale: saturation (local, 2 cores)"),
      saturated ? `at ${saturated.multiple}x` : `not reached by ${STEPS.at(-1)}x`,
      "the first step with over 1% failed, a request not sent, p99 over 1 s, or queued events or profile work still pending 5 s after the last answer",
    ]);
    rows.push([
      label("scale: D1 bytes per stored event, all events hot (shop mix)"),
      `${hot.perEvent} B`,
      `${events} events, ${(hot.bytes / 1024 / 1024).toFixed(1)} MB of D1 pages (checkpointed copy, dbstat); by table: ${hot.tables}`,
    ]);
    await compact(edge);
    const [{ left }] = await edge.query("SELECT COUNT(*) AS left FROM events");
    const [{ objects }] = await edge.query("SELECT COUNT(*) AS objects FROM archive_objects");
    const cold = perEvent(d1Tables(state));
    rows.push([
      label("scale: D1 bytes per stored event past the hot window (shop mix, all databases)"),
      `${cold.perEvent} B`,
      `${left} of ${events} events still in D1 after compaction, dedup keys for all (inside the 7-day window), ${objects} archive objects (${(events / Math.max(1, objects)).toFixed(1)} events each); by table: ${cold.tables}; #18's target is <= 300`,
    ]);
    if (SHARDS > 1) {
      // `DB` is the database with the events table; the others are profile shards.
      const sum = (tables = {}) => Object.values(tables).reduce((a, b) => a + b, 0);
      const files = d1Files(state);
      const grown = files.map((tables, i) => ({ shared: "events" in tables, bytes: sum(tables) - sum(emptyFiles[i]) }));
      const per = (bytes) => `${Math.round(bytes / Math.max(1, events))} B`;
      const db = files.findIndex((tables) => "events" in tables);
      rows.push([
        `scale: D1 bytes per stored event by database, ${SHARDS} profile shards`,
        `DB ${per(grown[db].bytes)}`,
        `DB by table: ${bytesPerEvent(files[db], emptyFiles[db], events).tables}; profile shards (state rows, memberships and co-occurrence evidence with its counts): ${grown.filter((g) => !g.shared).map((g) => per(g.bytes)).join(", ")}`,
      ]);
    }
  } finally {
    await edge.stop();
  }
  return rows;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = await scaleRows();
  console.log("| measure | value | detail |\n|---|---|---|");
  for (const row of rows) console.log(`| ${row.join(" | ")} |`);
}
