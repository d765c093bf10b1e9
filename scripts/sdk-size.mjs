// Measures what a page downloads for the SDK: the optimised wasm module, and the JS (package entry
// + wasm-bindgen glue, which the build bundles into one minified module, sdk/npm/index.js) as
// shipped, each gzip -9; and the optional `@seam/sdk/decide` add-on by itself.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { build } from "esbuild";

const root = new URL("..", import.meta.url).pathname;

const gzip = (buf) => gzipSync(buf, { level: 9 }).length;
const brotli = (buf) =>
  brotliCompressSync(buf, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length;

export async function measureSdk() {
  const wasm = readFileSync(join(root, "sdk/npm/dist/seam_sdk_bg.wasm"));
  // The package's module as shipped: the build already bundled and minified entry + glue (a
  // site's bundler would only drop its compile-hint comment).
  const js = readFileSync(join(root, "sdk/npm/index.js"));
  // The optional decide add-on on its own (the core it imports is counted above).
  const addOn = await build({
    entryPoints: [join(root, "sdk/npm/decide.js")],
    bundle: true,
    minify: true,
    format: "esm",
    write: false,
    external: ["./index.js"],
    logLevel: "silent",
  });
  const decide = Buffer.from(addOn.outputFiles[0].contents);
  return {
    decide: { raw: decide.length, gzip: gzip(decide), brotli: brotli(decide) },
    wasm: { raw: wasm.length, gzip: gzip(wasm), brotli: brotli(wasm) },
    js: { raw: js.length, gzip: gzip(js), brotli: brotli(js) },
    total: { raw: wasm.length + js.length, gzip: gzip(wasm) + gzip(js), brotli: brotli(wasm) + brotli(js) },
  };
}

export const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KB`;

/** Raw bytes of each section of the shipped wasm (it carries no names), largest first. */
export function wasmSections() {
  const wasm = readFileSync(join(root, "sdk/npm/dist/seam_sdk_bg.wasm"));
  const names = { 1: "types", 2: "imports", 3: "functions", 5: "memory", 6: "globals", 7: "exports", 9: "elements", 10: "code", 11: "data" };
  const sizes = {};
  for (let pos = 8; pos < wasm.length; ) {
    const id = wasm[pos];
    let size = 0;
    let shift = 0;
    let p = pos + 1;
    for (;;) {
      const byte = wasm[p++];
      size |= (byte & 0x7f) << shift;
      if (!(byte & 0x80)) break;
      shift += 7;
    }
    const key = names[id] ?? "other";
    sizes[key] = (sizes[key] ?? 0) + size;
    pos = p + size;
  }
  return { total: wasm.length, sections: Object.entries(sizes).sort((a, b) => b[1] - a[1]) };
}

/** The value of `measure`'s row in the committed bench/results.md, if it has one. */
export function committedResult(measure) {
  try {
    const line = readFileSync(join(root, "bench/results.md"), "utf8")
      .split("\n")
      .find((l) => l.startsWith(`| ${measure} | `));
    return line?.split(" | ")[1];
  } catch {
    return undefined;
  }
}

