// Assembles the site the Worker serves: demo-site/ plus the @seam/sdk package under
// /vendor/seam-sdk/. The package comes from `npm pack` of sdk/npm, unpacked: exactly the files a
// site owner gets from npm, so the e2e tests exercise the published tarball.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const out = join(root, "dist/site");

/** Packs sdk/npm with `npm pack`; returns the tarball's path (in a fresh temp dir). */
export function packSdk() {
  const dir = mkdtempSync(join(tmpdir(), "seam-pack-"));
  const [info] = JSON.parse(
    execFileSync("npm", ["pack", "--json", "--pack-destination", dir], { cwd: join(root, "sdk/npm"), encoding: "utf8" }),
  );
  return join(dir, info.filename);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const tarball = packSdk();
  const unpacked = dirname(tarball);
  execFileSync("tar", ["-xzf", tarball, "-C", unpacked]);
  const pkgDir = join(unpacked, "package");
  const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));

  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  cpSync(join(root, "demo-site"), out, { recursive: true });
  for (const file of pkg.files.filter((f) => !f.endsWith(".md") && !f.endsWith(".d.ts"))) {
    mkdirSync(dirname(join(out, "vendor/seam-sdk", file)), { recursive: true });
    cpSync(join(pkgDir, file), join(out, "vendor/seam-sdk", file));
  }
  rmSync(unpacked, { recursive: true, force: true });
}
