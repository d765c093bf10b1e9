// The npm package as published: `npm pack` of sdk/npm, installed into a fresh project, bundled by
// esbuild the way a site's build would. (The e2e shop tests run the same unpacked tarball in
// Chromium: scripts/build-site.mjs.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import { packSdk } from "../../scripts/build-site.mjs";

test("npm pack output installs and bundles with esbuild, with types and the wasm", async () => {
  const tarball = packSdk();
  const listing = execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" }).split("\n");
  for (const file of ["index.js", "index.d.ts", "README.md", "dist/seam_sdk_bg.wasm", "package.json"]) {
    assert.ok(listing.includes(`package/${file}`), `tarball has ${file}: ${listing}`);
  }
  const project = mkdtempSync(join(tmpdir(), "seam-site-"));
  try {
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "site", private: true, type: "module" }));
    execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", tarball], { cwd: project, stdio: "ignore" });
    const installed = join(project, "node_modules/@seam/sdk");
    assert.ok(existsSync(join(installed, "dist/seam_sdk_bg.wasm")));
    const types = readFileSync(join(installed, "index.d.ts"), "utf8");
    for (const name of ["load", "track", "page", "identify", "group", "alias", "flush", "anonymousId", "reset"]) {
      assert.match(types, new RegExp(`export function ${name}\\(`), `types declare ${name}`);
    }
    assert.match(types, /export const consent/);

    writeFileSync(
      join(project, "main.js"),
      'import { load, track, consent } from "@seam/sdk";\nload({ writeKey: "k" });\nconsent.update({ analytics_storage: "granted" });\ntrack("Bundled");\n',
    );
    const result = await build({
      entryPoints: [join(project, "main.js")],
      bundle: true,
      format: "esm",
      minify: true,
      write: false,
      absWorkingDir: project,
      logLevel: "silent",
    });
    const bundle = result.outputFiles[0].text;
    assert.match(bundle, /seam_sdk_bg\.wasm/, "the bundle loads the wasm relative to the package");
    // The SDK is bundled, not shaken away: its loader and its sender (export names are minified).
    assert.match(bundle, /instantiateStreaming/);
    assert.match(bundle, /keepalive/);
  } finally {
    rmSync(project, { recursive: true, force: true });
    rmSync(join(tarball, ".."), { recursive: true, force: true });
  }
});

// The package's loader in Chromium, served these ways: with the wasm MIME type (instantiated while
// it streams), as application/octet-stream (instantiated from the bytes instead), compiled by the
// page's snippet (`load({ wasm })`, falling back to the URL when that compile failed), and missing
// (load() resolves false and calls made meanwhile are dropped, never thrown into the page).
test("the package's loader starts from a streamed wasm, from one served with another MIME type, from the snippet's compiled module, and fails softly without one", async () => {
  const { createServer } = await import("node:http");
  const { launchBrowser } = await import("../support/browser.mjs");
  const sdk = new URL("../../sdk/npm/", import.meta.url).pathname;
  const posts = [];
  const server = createServer((req, res) => {
    const [path, query] = req.url.split("?");
    if (req.method === "POST") {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        posts.push(JSON.parse(body));
        res.writeHead(200, { "content-type": "application/json" });
        res.end("{}");
      });
      return;
    }
    if (path === "/page.html") {
      // "compiled": the README's snippet compiles the module while the page parses, and the
      // SDK's own URL is missing, so only that module can start it. "compile-failed": the
      // snippet's compile fails (no module there), so the SDK fetches its URL.
      const snippet = { compiled: "wasm", "compile-failed": "missing" }[query];
      const own = snippet ? { compiled: "missing", "compile-failed": "wasm" }[query] : query;
      res.writeHead(200, { "content-type": "text/html" });
      return res.end(`<!doctype html>${snippet ? `<script>seamWasm = self.WebAssembly?.compileStreaming?.(fetch("/sdk/dist/seam_sdk_bg.wasm?${snippet}")).catch(() => {})</script>` : ""}
        <script type="module">
        import { load, track, anonymousId, flush } from "/sdk/index.js";
        window.__result = (async () => {
          const wasmUrl = "/sdk/dist/seam_sdk_bg.wasm?${own}";
          const started = load({ writeKey: "k", endpoint: location.origin, wasmUrl, wasm: window.seamWasm, consent: { analytics_storage: "granted" } });
          track("Loader Checked");
          const ok = await started;
          await flush();
          return { ok, anonymousId: anonymousId() ?? null };
        })();
      </script>`);
    }
    if (!path.startsWith("/sdk/")) {
      res.writeHead(404);
      return res.end();
    }
    if (path.endsWith(".wasm") && query === "missing") {
      res.writeHead(404, { "content-type": "text/html" });
      return res.end("<h1>not here</h1>");
    }
    const type = path.endsWith(".js") ? "text/javascript" : query === "octet" ? "application/octet-stream" : "application/wasm";
    res.writeHead(200, { "content-type": type });
    res.end(readFileSync(join(sdk, path.slice(5))));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const browser = await launchBrowser();
  try {
    const run = async (query) => {
      const page = await browser.context.newPage();
      const errors = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      await page.goto(`${origin}/page.html?${query}`);
      const result = await page.evaluate(() => window.__result);
      await page.close();
      return { ...result, errors };
    };
    for (const query of ["wasm", "octet", "compiled", "compile-failed"]) {
      const before = posts.length;
      const result = await run(query);
      assert.equal(result.ok, true, `${query}: load() resolves true`);
      assert.match(result.anonymousId, /^[\w-]{16,}$/, `${query}: the SDK runs`);
      assert.deepEqual(result.errors, []);
      const sent = posts.slice(before).flatMap((p) => p.batch ?? [p]);
      assert.ok(sent.some((e) => e.event === "Loader Checked"), `${query}: the call made before ready went out`);
    }
    const before = posts.length;
    const missing = await run("missing");
    assert.equal(missing.ok, false, "no wasm: load() resolves false");
    assert.equal(missing.anonymousId, null);
    assert.deepEqual(missing.errors, [], "nothing thrown into the page");
    assert.equal(posts.length, before, "nothing sent");
  } finally {
    await browser.close();
    await new Promise((r) => server.close(r));
  }
});
