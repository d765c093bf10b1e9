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
