// Assembles the site the Worker serves: demo-site/ plus the @seam/sdk package under
// /vendor/seam-sdk/. The package comes from `npm pack` of sdk/npm, unpacked: exactly the files a
// site owner gets from npm, so the e2e tests exercise the published tarball.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
  cpSync(join(root, "demo-site"), out, { recursive: true, filter: (src) => !src.includes("/partials") });
  // The console (`/console/`): the Worker's own pages over its admin API, beside the site.
  cpSync(join(root, "console"), join(out, "console"), { recursive: true });
  expandIncludes();
  for (const file of pkg.files.filter((f) => !f.endsWith(".md") && !f.endsWith(".d.ts"))) {
    mkdirSync(dirname(join(out, "vendor/seam-sdk", file)), { recursive: true });
    cpSync(join(pkgDir, file), join(out, "vendor/seam-sdk", file));
  }
  rmSync(unpacked, { recursive: true, force: true });
  writeSecurityHeaders();
}

// The pages share their head links, header, footer and consent banner: `<!-- include: name -->`
// is replaced by demo-site/partials/name.html, so the served HTML is whole (the Worker renders
// it as is, and it works without JavaScript).
function expandIncludes() {
  for (const file of readdirSync(out).filter((f) => f.endsWith(".html"))) {
    const html = readFileSync(join(out, file), "utf8").replace(/^ *<!-- include: ([a-z-]+) -->\n/gm, (_, name) =>
      readFileSync(join(root, "demo-site/partials", `${name}.html`), "utf8"),
    );
    writeFileSync(join(out, file), html);
  }
}

// Security headers for every page the Worker's assets serve (Cloudflare's `_headers` file). The
// CSP allows only this origin; inline scripts (the import maps, the SDK's compile snippet) are
// allowed by their hashes, and WebAssembly compilation by 'wasm-unsafe-eval'.
function writeSecurityHeaders() {
  const CONSOLE_CSP = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join("; ");
  const inlineHashes = new Set();
  for (const file of readdirSync(out).filter((f) => f.endsWith(".html"))) {
    const html = readFileSync(join(out, file), "utf8");
    for (const [, body] of html.matchAll(/<script(?![^>]*\bsrc=)[^>]*>([\s\S]*?)<\/script>/g)) {
      inlineHashes.add(`'sha256-${createHash("sha256").update(body).digest("base64")}'`);
    }
  }
  const csp = [
    "default-src 'self'",
    `script-src 'self' 'wasm-unsafe-eval' ${[...inlineHashes].sort().join(" ")}`.trim(),
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join("; ");
  writeFileSync(
    join(out, "_headers"),
    `/*\n  Content-Security-Policy: ${csp}\n  X-Content-Type-Options: nosniff\n  Referrer-Policy: strict-origin-when-cross-origin\n  X-Frame-Options: DENY\n  Permissions-Policy: camera=(), microphone=(), geolocation=()\n` +
      // The console runs only its own script and talks only to this origin; nothing is cached.
      `/console/*\n  Content-Security-Policy: ${CONSOLE_CSP}\n  Cache-Control: no-store\n  Referrer-Policy: no-referrer\n`,
  );
}
