// Assembles the site the Worker serves: demo-site/ plus the @seam/sdk package as installed in
// node_modules (the same files a site owner gets from npm), under /vendor/seam-sdk/.
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
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

// Security headers for every page the Worker's assets serve (Cloudflare's `_headers` file). The
// CSP allows only this origin; inline scripts (the import maps) are allowed by their hashes, and
// WebAssembly compilation by 'wasm-unsafe-eval'.
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
  `/*\n  Content-Security-Policy: ${csp}\n  X-Content-Type-Options: nosniff\n  Referrer-Policy: strict-origin-when-cross-origin\n  X-Frame-Options: DENY\n  Permissions-Policy: camera=(), microphone=(), geolocation=()\n`,
);
