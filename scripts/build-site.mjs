// Assembles the site the Worker serves: demo-site/ plus the @seam/sdk package as installed in
// node_modules (the same files a site owner gets from npm), under /vendor/seam-sdk/.
import { cpSync, mkdirSync, rmSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createRequire } from "node:module";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const out = join(root, "dist/site");
const require = createRequire(join(root, "package.json"));
const pkgDir = dirname(require.resolve("@seam/sdk/package.json"));
const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
cpSync(join(root, "demo-site"), out, { recursive: true });
for (const file of pkg.files.filter((f) => !f.endsWith(".md") && !f.endsWith(".d.ts"))) {
  mkdirSync(dirname(join(out, "vendor/seam-sdk", file)), { recursive: true });
  cpSync(join(pkgDir, file), join(out, "vendor/seam-sdk", file));
}
