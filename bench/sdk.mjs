// The browser SDK's rows for `npm run bench`: download size next to the peers (measured the same
// way), where the wasm bytes go, and main-thread cost of track() plus start-up from navigation start in headless
// Chromium, side by side with Segment's analytics-next in the same harness.
//
// Peers are installed at pinned versions into bench/.peers (git-ignored) with npm the first time.
// Run alone: `node bench/sdk.mjs`.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join } from "node:path";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { launchBrowser } from "../tests/support/browser.mjs";
import { kb, measureSdk, wasmSections } from "../scripts/sdk-size.mjs";

const root = new URL("..", import.meta.url).pathname;
const peersDir = join(root, "bench/.peers");
export const PEERS = {
  "@segment/analytics-next": "1.84.3",
  "@rudderstack/analytics-js": "3.34.1",
  "posthog-js": "1.449.2",
  "@snowplow/browser-tracker": "4.10.1",
};
const CALLS = 10_000;
const BATCH = 20; // performance.now() is too coarse for one call: time batches of 20

function installPeers() {
  const installed = (name) => existsSync(join(peersDir, "node_modules", name, "package.json"));
  if (Object.keys(PEERS).every(installed)) return;
  mkdirSync(peersDir, { recursive: true });
  writeFileSync(join(peersDir, "package.json"), JSON.stringify({ name: "seam-bench-peers", private: true }));
  const specs = Object.entries(PEERS).map(([name, version]) => `${name}@${version}`);
  execFileSync("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts", ...specs], { cwd: peersDir, stdio: ["ignore", 2, 2] });
}

/** A site's bundle of `entry` (esbuild, minified, everything inlined). */
async function bundle(contents, format = "esm") {
  const result = await build({
    stdin: { contents, resolveDir: peersDir, loader: "js" },
    bundle: true,
    minify: true,
    format,
    write: false,
    logLevel: "silent",
    define: { "process.env.NODE_ENV": '"production"' },
  });
  return Buffer.from(result.outputFiles[0].contents);
}

/** gzip -9 of what a site ships for each peer: its npm entry bundled and minified. */
export async function peerSizeRows() {
  installPeers();
  const rows = [];
  for (const [name, version] of Object.entries(PEERS)) {
    const js = await bundle(`import * as sdk from "${name}"; globalThis.__sdk = sdk;`);
    rows.push([`size: ${name} ${version}`, `${kb(gzipSync(js, { level: 9 }).length)} gzip`, `${kb(js.length)} raw (npm entry, esbuild --bundle --minify)`]);
  }
  return rows;
}

/** Section sizes of the shipped wasm (it carries no names, so twiggy shows only indices). */
export function wasmSectionRow() {
  const { total, sections } = wasmSections();
  return ["SDK wasm sections (raw)", kb(total), sections.map(([k, v]) => `${k} ${kb(v)}`).join(", ")];
}

const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".html": "text/html" };

/** Serves the SDK package, the analytics-next bundle and a collector that answers 200. */
async function serve(files) {
  const server = createServer((req, res) => {
    const headers = {
      // Cross-origin isolation gives performance.now() its finest resolution.
      "Cross-Origin-Opener-Policy": "same-origin",
      "Cross-Origin-Embedder-Policy": "require-corp",
    };
    const path = req.url.split("?")[0];
    if (path === "/v1/projects/bench/settings") {
      res.writeHead(200, { ...headers, "content-type": "application/json" });
      return res.end(SEGMENT_SETTINGS.replace("location.host", req.headers.host));
    }
    if (req.method === "POST" || path.startsWith("/v1/")) {
      req.resume();
      res.writeHead(200, { ...headers, "content-type": "application/json", "access-control-allow-origin": "*" });
      return res.end("{}");
    }
    const file = files[path] ?? (path.startsWith("/seam/") ? join(root, "sdk/npm", path.slice(6)) : undefined);
    if (!file || (typeof file === "string" && !existsSync(file))) {
      res.writeHead(404, headers);
      return res.end();
    }
    res.writeHead(200, { ...headers, "content-type": TYPES[extname(path)] ?? "text/plain" });
    res.end(typeof file === "string" ? readFileSync(file) : file);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

// Runs in the page: once the SDK is ready, CALLS track() calls timed in batches.
const harness = (calls, batch) => `
  const props = { product_id: "p1", category: "Running Shoes", price: 129 };
  const times = [];
  async function measure(track) {
    for (let i = 0; i < ${calls}; i += ${batch}) {
      const t0 = performance.now();
      for (let j = 0; j < ${batch}; j++) track("Product Viewed", props);
      times.push((performance.now() - t0) / ${batch});
      // Let the SDK deliver between batches, so the timing is steady state, not a growing backlog.
      await new Promise((r) => setTimeout(r, 5));
    }
    times.sort((a, b) => a - b);
    return times[times.length >> 1] * 1000;
  }
  window.__result = (async () => {
    const track = await start();
    return { median: await measure(track), isolated: crossOriginIsolated };
  })();
`;

/** track() median (µs per call) for Seam and analytics-next. */
export async function browserRows() {
  installPeers();
  const analyticsNext = await bundle(`import { AnalyticsBrowser } from "@segment/analytics-next"; window.AnalyticsBrowser = AnalyticsBrowser;`, "iife");
  const pages = {
    "/seam.html": `<script type="module">
      import { load, track } from "/seam/index.js";
      async function start() {
        await load({ writeKey: "bench", endpoint: location.origin, consent: { analytics_storage: "granted" }, flushInterval: 600000 });
        return track;
      }
      ${harness(CALLS, BATCH)}
    </script>`,
    "/segment.html": `<script src="/analytics-next.js"></script><script>
      async function start() {
        const [analytics] = await AnalyticsBrowser.load({
          writeKey: "bench",
          cdnURL: location.origin,
          cdnSettings: { integrations: { "Segment.io": { apiKey: "bench", apiHost: location.host + "/v1", protocol: "http" } } },
        });
        return (event, props) => analytics.track(event, props);
      }
      ${harness(CALLS, BATCH)}
    </script>`,
  };
  const server = await serve({ "/analytics-next.js": analyticsNext, ...Object.fromEntries(Object.entries(pages).map(([k, v]) => [k, Buffer.from(v)])) });
  const browser = await launchBrowser();
  const results = {};
  try {
    for (const name of ["seam", "segment"]) {
      const page = await browser.context.newPage();
      await page.goto(`${server.url}/${name}.html`, { waitUntil: "domcontentloaded" });
      results[name] = await page.evaluate(() => window.__result);
      await page.close();
    }
  } finally {
    await browser.close();
    await server.close();
  }
  const { seam, segment } = results;
  const isolated = seam.isolated && segment.isolated ? "cross-origin isolated timer" : "coarse timer";
  return [
    ["browser: track() main-thread median, Seam", `${seam.median.toFixed(1)} µs`, `vs analytics-next ${segment.median.toFixed(1)} µs; ${CALLS} calls in batches of ${BATCH}, headless Chromium, ${isolated}`],
    ["browser: track() median, analytics-next 1.84.3", `${segment.median.toFixed(1)} µs`, "same harness and page shape"],
  ];
}

const STARTUP_RUNS = Number(process.env.STARTUP_RUNS ?? 31);

// analytics-next's settings as its CDN serves them: the Segment.io destination pointed at the
// local collector. `location.host/v1` is the page's host (the server fills it in).
const SEGMENT_SETTINGS = `{ "integrations": { "Segment.io": { "apiKey": "bench", "apiHost": "location.host/v1", "protocol": "http" } } }`;

// A page loading analytics-next from a classic script, as its snippet does; `settings` is the
// inline settings option, or empty to fetch them from `cdnURL`.
const segmentPage = (settings) => `<!doctype html><head><script src="/analytics-next.js"></script><script>
  ${startup(`async () => {
    const loading = AnalyticsBrowser.load({ writeKey: "bench", cdnURL: location.origin, ${settings} });
    loading.track("Page Loaded", { path: location.pathname });
    await loading;
  }`)}
</script></head>`;

// Runs in the page: a track() made at load, then when the SDK is ready and when the event's request
// started, both in ms since navigation start (performance.now()'s origin). The page reports them
// on its console: an evaluate() from the harness would run in the page while it still loads.
const startup = (loadAndTrack) => `
  const wire = new Promise((resolve) => {
    new PerformanceObserver((list, observer) => {
      // The collector's paths; not analytics-next's settings (/v1/projects/…).
      const sent = list.getEntries().find((e) => /^.v1.(?!projects)/.test(new URL(e.name).pathname));
      if (sent) {
        observer.disconnect();
        resolve(sent.startTime);
      }
    }).observe({ type: "resource", buffered: true });
  });
  const ready = (${loadAndTrack})().then(() => performance.now());
  Promise.all([ready, wire]).then(([ready, wire]) => console.log("startup " + JSON.stringify({ ready, wire })));
`;

/**
 * Start-up from navigation start on fresh pages (a new browser context per page: nothing cached or
 * compiled), STARTUP_RUNS runs alternating between the SDKs: the median time until the SDK is
 * ready, and until a track() made at load is on the wire. Seam three times: as the README's plain
 * import, with its preload hints alone (for pages whose policy forbids inline scripts), and with
 * its snippet (the hints and a compile started while the page parses). analytics-next twice: with its
 * settings passed inline (`cdnSettings`, its fastest start: no request before ready), and as it
 * loads by default, fetching its settings from its CDN (here the same local server, so without
 * the CDN's latency).
 */
export async function startupRows() {
  installPeers();
  const analyticsNext = await bundle(`import { AnalyticsBrowser } from "@segment/analytics-next"; window.AnalyticsBrowser = AnalyticsBrowser;`, "iife");
  const seamPage = (head) => `<!doctype html><head>${head}<script type="module">
      import { load, track } from "/seam/index.js";
      ${startup(`async () => {
        const ready = load({ writeKey: "bench", endpoint: location.origin, wasm: window.seamWasm, consent: { analytics_storage: "granted" } });
        track("Page Loaded", { path: location.pathname });
        await ready;
      }`)}
    </script></head>`;
  // The README's hints, and its snippet: the hints and a compile started while the page parses.
  const hints = `<link rel="modulepreload" href="/seam/index.js"><link rel="preload" href="/seam/dist/seam_sdk_bg.wasm" as="fetch" type="application/wasm" crossorigin>`;
  const compile = `<script>seamWasm = self.WebAssembly?.compileStreaming?.(fetch("/seam/dist/seam_sdk_bg.wasm")).catch(() => {})</script>`;
  const pages = {
    "/seam.html": seamPage(""),
    "/seam-preload.html": seamPage(hints),
    "/seam-snippet.html": seamPage(hints + compile),
    "/segment.html": segmentPage(`cdnSettings: ${SEGMENT_SETTINGS.replace(/"location.host\/v1"/, 'location.host + "/v1"')},`),
    "/segment-fetched.html": segmentPage(""),
  };
  const server = await serve({ "/analytics-next.js": analyticsNext, ...Object.fromEntries(Object.entries(pages).map(([k, v]) => [k, Buffer.from(v)])) });
  const runs = { seam: [], "seam-preload": [], "seam-snippet": [], segment: [], "segment-fetched": [] };
  // One browser, a new context per page: its own empty HTTP and code caches.
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
  try {
    for (let i = 0; i < STARTUP_RUNS; i++) {
      for (const name of Object.keys(runs)) {
        const context = await browser.newContext();
        try {
          const page = await context.newPage();
          const reported = page.waitForEvent("console", (m) => m.text().startsWith("startup "));
          await page.goto(`${server.url}/${name}.html`, { waitUntil: "commit" });
          runs[name].push(JSON.parse((await reported).text().slice(8)));
        } finally {
          await context.close();
        }
      }
    }
  } finally {
    await browser.close();
    await server.close();
  }
  const median = (values) => values.sort((a, b) => a - b)[values.length >> 1];
  const of = (name, key) => median(runs[name].map((r) => r[key]));
  // Each round loads the four pages back to back, so comparing within a round cancels the
  // machine's drift over the run: the median of the rounds' differences, and in how many rounds
  // Seam was ahead.
  const paired = (name, key, peer) => {
    const diffs = runs[name].map((r, i) => r[key] - runs[peer][i][key]);
    const ahead = diffs.filter((d) => d < 0).length;
    return `${median(diffs).toFixed(1)} ms, ahead in ${ahead} of ${diffs.length}`;
  };
  const against = (key, peer) =>
    `Seam minus analytics-next ${paired("seam", key, peer)} (${paired("seam-preload", key, peer)} with the hints, ${paired("seam-snippet", key, peer)} with the snippet)`;
  const vs = (key) =>
    `vs analytics-next ${of("segment", key).toFixed(1)} ms with its settings inline, ${of("segment-fetched", key).toFixed(1)} ms fetching them (its default); ` +
    `per round, ${against(key, "segment")}; against the default, ${against(key, "segment-fetched")}`;
  const three = (key) => `${["seam", "seam-preload", "seam-snippet"].map((name) => of(name, key).toFixed(1)).join(" / ")} ms`;
  const detail = `medians of ${STARTUP_RUNS} rounds of fresh pages, alternating, from navigation start; local server, headless Chromium`;
  return [
    ["browser: start-up to ready, Seam / with preload hints / with the README's snippet", three("ready"), `${vs("ready")}; ${detail}`],
    ["browser: track() at load on the wire, Seam / with preload hints / with the README's snippet", three("wire"), `${vs("wire")}; ${detail}`],
  ];
}

/** Every SDK row: Seam's size, the peers', the wasm breakdown, the browser timings. */
export async function sdkRows() {
  const size = await measureSdk();
  return [
    ["size: @seam/sdk (wasm + JS)", `${kb(size.total.gzip)} gzip`, `wasm ${kb(size.wasm.gzip)} + JS ${kb(size.js.gzip)}; ${kb(size.total.brotli)} brotli`],
    ...(await peerSizeRows()),
    wasmSectionRow(),
    ...(await browserRows()),
    ...(await startupRows()),
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = process.env.SDK_ONLY === "startup" ? await startupRows() : await sdkRows();
  for (const row of rows) console.log(`| ${row.join(" | ")} |`);
}
