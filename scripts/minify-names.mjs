// Shortens the names the SDK's wasm module and its wasm-bindgen glue use for each other:
// wasm-bindgen names imports like `__wbg_cookieGet_6c1b7d2a8e3f4a5b` and puts the module path
// (`./snippets/seam-sdk-<hash>/src/platform/browser.js`) on every import; those hashes barely
// compress and appear in both files. This rewrites the wasm import and export sections to one
// module `a` and names `a`, `b`, ... and patches the glue to match (about 2 KB gzip less).
//
// Usage: node scripts/minify-names.mjs <glue.js> <module_bg.wasm>   (both rewritten in place)
import { readFileSync, writeFileSync } from "node:fs";

const [gluePath, wasmPath] = process.argv.slice(2);
const wasm = readFileSync(wasmPath);
let glue = readFileSync(gluePath, "utf8");

// --- wasm binary helpers -------------------------------------------------------------------
function readU32(buf, pos) {
  let result = 0;
  let shift = 0;
  for (;;) {
    const byte = buf[pos++];
    result |= (byte & 0x7f) << shift;
    if (!(byte & 0x80)) return [result >>> 0, pos];
    shift += 7;
  }
}
function u32(n) {
  const out = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n) byte |= 0x80;
    out.push(byte);
  } while (n);
  return Buffer.from(out);
}
const name = (s) => Buffer.concat([u32(Buffer.byteLength(s)), Buffer.from(s)]);
function readName(buf, pos) {
  const [len, start] = readU32(buf, pos);
  return [buf.toString("utf8", start, start + len), start + len];
}
function limitsEnd(buf, pos) {
  const flags = buf[pos++];
  [, pos] = readU32(buf, pos);
  if (flags & 1) [, pos] = readU32(buf, pos);
  return pos;
}

let counter = 0;
const LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/** The next name in a, b, ..., Z, aa, ab, ... (bijective base 52). */
const short = () => {
  let s = "";
  for (let n = counter++; n >= 0; n = Math.floor(n / LETTERS.length) - 1) s = LETTERS[n % LETTERS.length] + s;
  return s;
};

const imports = []; // [module, field, short]
const exports = []; // [old, short]
const parts = [wasm.subarray(0, 8)];
let pos = 8;
while (pos < wasm.length) {
  const id = wasm[pos];
  const [size, start] = readU32(wasm, pos + 1);
  const end = start + size;
  if (id === 2) {
    let p = start;
    let count;
    [count, p] = readU32(wasm, p);
    const entries = [u32(count)];
    for (let i = 0; i < count; i++) {
      let module, field;
      [module, p] = readName(wasm, p);
      [field, p] = readName(wasm, p);
      const descStart = p;
      const kind = wasm[p++];
      if (kind === 0) [, p] = readU32(wasm, p);
      else if (kind === 1) p = limitsEnd(wasm, p + 1);
      else if (kind === 2) p = limitsEnd(wasm, p);
      else if (kind === 3) p += 2;
      else if (kind === 4) [, p] = readU32(wasm, p + 1);
      else throw new Error(`unknown import kind ${kind}`);
      const renamed = short();
      imports.push([module, field, renamed]);
      entries.push(name("a"), name(renamed), wasm.subarray(descStart, p));
    }
    const body = Buffer.concat(entries);
    parts.push(Buffer.from([2]), u32(body.length), body);
  } else if (id === 7) {
    let p = start;
    let count;
    [count, p] = readU32(wasm, p);
    const entries = [u32(count)];
    counter = 0;
    for (let i = 0; i < count; i++) {
      let field;
      [field, p] = readName(wasm, p);
      const descStart = p;
      p += 1;
      [, p] = readU32(wasm, p);
      const renamed = short();
      exports.push([field, renamed]);
      entries.push(name(renamed), wasm.subarray(descStart, p));
    }
    const body = Buffer.concat(entries);
    parts.push(Buffer.from([7]), u32(body.length), body);
  } else {
    parts.push(wasm.subarray(pos, end));
  }
  pos = end;
}

// --- glue ------------------------------------------------------------------------------------
const fail = (what) => {
  throw new Error(`minify-names: ${what} (wasm-bindgen glue changed shape?)`);
};
const escape = (s) => s.replace(/[$]/g, "\\$");
const own = "./seam_sdk_bg.js";
const snippet = [];
for (const [module, field, renamed] of imports) {
  if (module === own) {
    const key = new RegExp(`(\\n\\s+)${escape(field)}: function`);
    if (!key.test(glue)) fail(`import ${field} not found`);
    glue = glue.replace(key, `$1${renamed}: function`);
  } else {
    if (!module.startsWith("./snippets/")) fail(`unexpected import module ${module}`);
    snippet.push([module, field, renamed]);
  }
}
const returned = /return \{\s*__proto__: null,\s*"\.\/seam_sdk_bg\.js": import0,[^}]*\};/;
if (!returned.test(glue)) fail("import object not found");
const namespaces = new Map();
for (const m of glue.matchAll(/import \* as (import\d+) from "([^"]+)"/g)) namespaces.set(m[2], m[1]);
const extra = snippet.map(([module, field, renamed]) => {
  const ns = namespaces.get(module) ?? fail(`namespace for ${module}`);
  return `${JSON.stringify(renamed)}: ${ns}.${field}`;
});
glue = glue.replace(returned, `return { __proto__: null, a: Object.assign(import0, { ${extra.join(", ")} }) };`);
for (const [old, renamed] of exports) {
  const use = new RegExp(`\\bwasm\\.${escape(old)}\\b`, "g");
  glue = glue.replace(use, `wasm.${renamed}`);
}

writeFileSync(wasmPath, Buffer.concat(parts));
writeFileSync(gluePath, glue);
