// Where the Worker's CPU goes while it answers and stores queued 20-event batches: a V8 CPU
// profile of the isolate (wrangler dev's inspector), summed by function. Wall-clock phases
// (`REPORT_TIMINGS`, in run.mjs) show waiting on D1 and the queue; this shows the CPU.
//
//   node bench/profile.mjs                 # PROFILE_REQUESTS=400, top PROFILE_TOP=25 functions
//   PROFILE_UNDER=snapshots::publish node bench/profile.mjs   # what one function's time is spent on
//
// Writes the raw profile to bench/.profile.cpuprofile (git-ignored; Chrome DevTools opens it).
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
// wrangler's own WebSocket client (a dependency of wrangler and miniflare): Node 20's built-in
// one, behind --experimental-websocket, is refused by wrangler's inspector proxy.
import WebSocket from "ws";
import { root, settled, startEdge, WRITE_KEY } from "../tests/support/edge.mjs";

const REQUESTS = Number(process.env.PROFILE_REQUESTS ?? 400);
const TOP = Number(process.env.PROFILE_TOP ?? 25);
const UNDER = process.env.PROFILE_UNDER;
// wrangler dev's inspector proxy (its default port).
const INSPECTOR = "http://127.0.0.1:9229";

const body = (run, n) =>
  JSON.stringify({
    writeKey: WRITE_KEY,
    batch: Array.from({ length: 20 }, (_, i) => ({
      type: "track", event: "Product Viewed", anonymousId: `profiled-${n % 50}`, messageId: `profile-${run}-${n}-${i}`,
      timestamp: new Date().toISOString(), properties: { product_id: `p-${i}`, price: 10, category: "Shoes" },
      context: { page: { url: "https://shop.example/p", path: "/p" }, userAgent: "Mozilla/5.0" },
    })),
  });

async function load(edge, run, count) {
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < count) {
        const n = next++;
        const r = await fetch(`${edge.url}/v1/batch`, { method: "POST", body: body(run, n), headers: { "content-type": "text/plain" } });
        await r.arrayBuffer();
      }
    }),
  );
}

/** A DevTools protocol session on the isolate. */
async function inspect() {
  const [target] = await (await fetch(`${INSPECTOR}/json`)).json();
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve, { once: true });
    ws.addEventListener("error", reject, { once: true });
  });
  let id = 0;
  const pending = new Map();
  ws.addEventListener("message", (event) => {
    const msg = JSON.parse(event.data);
    pending.get(msg.id)?.(msg);
    pending.delete(msg.id);
  });
  const call = (method, params = {}) =>
    new Promise((resolve) => {
      pending.set(++id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
  return { call, close: () => new Promise((r) => (ws.addEventListener("close", r, { once: true }), ws.close())) };
}

const name = (frame) => (frame.functionName || "(anonymous)").replace(/::h[0-9a-f]{16}$/, "");

/** Milliseconds per function: `self` (in the function itself) and `total` (anywhere on the stack). */
function summarise(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map();
  const total = new Map();
  const under = new Map();
  let all = 0;
  profile.samples.forEach((sample, i) => {
    const ms = (profile.timeDeltas[i] ?? 0) / 1000;
    all += ms;
    const stack = [];
    for (let id = sample; id !== undefined; id = parent.get(id)) stack.push(name(byId.get(id).callFrame));
    self.set(stack[0], (self.get(stack[0]) ?? 0) + ms);
    for (const f of new Set(stack)) total.set(f, (total.get(f) ?? 0) + ms);
    const at = UNDER ? stack.findIndex((f) => f.includes(UNDER)) : -1;
    if (at >= 0) {
      const callee = at > 0 ? stack[at - 1] : "(itself)";
      under.set(callee, (under.get(callee) ?? 0) + ms);
    }
  });
  return { all, self, total, under };
}

const table = (rows) => rows.map(([ms, label]) => `${ms.toFixed(0).padStart(7)} ms  ${label.slice(0, 140)}`).join("\n");
const top = (map, filter = () => true) => [...map].filter(([k]) => filter(k)).sort((a, b) => b[1] - a[1]).slice(0, TOP).map(([k, v]) => [v, k]);

const workerds = () => {
  try {
    return execFileSync("pgrep", ["-f", "workerd serve"], { encoding: "utf8" }).split("\n").filter(Boolean);
  } catch {
    return [];
  }
};
const before = new Set(workerds());
const edge = await startEdge("profile", { limits: { ip: 1_000_000, source: 1_000_000 } });
// This run's workerd processes: those that appeared while it started.
const ours = workerds().filter((p) => !before.has(p));
try {
  const run = Date.now();
  await load(edge, `${run}-warm`, 60);
  await settled(edge.url, 60_000);
  const session = await inspect();
  await session.call("Profiler.enable");
  await session.call("Profiler.setSamplingInterval", { interval: 100 });
  await session.call("Profiler.start");
  const started = performance.now();
  await load(edge, run, REQUESTS);
  const answered = performance.now() - started;
  await settled(edge.url, 120_000);
  const stored = performance.now() - started;
  const { result } = await session.call("Profiler.stop");
  await session.call("Profiler.disable");
  await session.close();
  writeFileSync(join(root, "bench/.profile.cpuprofile"), JSON.stringify(result.profile));
  const { all, self, total, under } = summarise(result.profile);
  console.log(`${REQUESTS} queued 20-event batches: answered in ${answered.toFixed(0)} ms, stored and refreshed in ${stored.toFixed(0)} ms; ${all.toFixed(0)} ms sampled (idle included)\n`);
  console.log(`Seam's functions, time anywhere on the stack:\n${table(top(total, (k) => /seam_(edge|core)::/.test(k)))}\n`);
  console.log(`All functions, time in the function itself:\n${table(top(self))}`);
  if (UNDER) console.log(`\nUnder ${UNDER}, by callee:\n${table(top(under))}`);
} finally {
  await edge.stop();
  // A workerd that had the inspector attached can outlive its wrangler: end this run's.
  await new Promise((r) => setTimeout(r, 2000));
  for (const pid of ours.filter((p) => workerds().includes(p))) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
}
