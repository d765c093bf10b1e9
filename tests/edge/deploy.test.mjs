// `wrangler deploy --dry-run` validates wrangler.toml, the built Worker and the assets together,
// without an account: what `npm run deploy` would upload.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { root, runWrangler } from "../support/edge.mjs";

test("wrangler deploy --dry-run accepts the Worker, bindings and assets", () => {
  const outdir = join(root, "tests/.tmp/deploy");
  rmSync(outdir, { recursive: true, force: true });
  const output = runWrangler(["deploy", "--dry-run", "--outdir", outdir]);
  assert.match(output, /env\.DB/);
  assert.match(output, /env\.CACHE/);
  assert.match(output, /--dry-run: exiting now/);
  assert.ok(existsSync(join(outdir, "index.js")));
  rmSync(outdir, { recursive: true, force: true });
});
