// Trims wasm-bindgen's `--target web` glue to what the SDK's entry (sdk/npm/src/index.js) uses:
// - one `init({ module_or_path, compiled })` that instantiates `compiled` (`load()`'s `wasm`: a
//   module, or a promise of one, the page compiled while it parsed) or else fetches the module
//   (a string or URL, as `wasmUrl` is typed; a Response is taken as is) and instantiates it
//   while it streams, or from its bytes when the server sends another type or the engine cannot stream (where
//   wasm-bindgen's falls back with a console warning), instead of `__wbg_init`,
//   `__wbg_init_once`, `__wbg_load` and `initSync` with their deprecation warnings (index.js
//   calls init once, behind its own promise);
// - no `TextEncoder.encodeInto` polyfill and no `passStringToWasm0` branch for a missing
//   `realloc`: every engine with the wasm features the module needs (reference types) has
//   `encodeInto`, and the glue always passes `realloc`.
// wasm-bindgen is pinned exactly (Cargo.toml); a glue of another shape fails the build here.
//
// Usage: node scripts/slim-glue.mjs <glue.js>   (rewritten in place; run after minify-names.mjs)
import { readFileSync, writeFileSync } from "node:fs";

const [gluePath] = process.argv.slice(2);
let glue = readFileSync(gluePath, "utf8");
const fail = (what) => {
  throw new Error(`slim-glue: ${what} (wasm-bindgen glue changed shape?)`);
};
function replace(pattern, replacement, what) {
  if (!pattern.test(glue)) fail(what);
  glue = glue.replace(pattern, replacement);
}

const start = /function __wbg_finalize_init\(instance, module\) \{[^}]*?wasm\.(\w+)\(\);/.exec(glue)?.[1] ?? fail("start export");
replace(
  /let wasmModule, wasmInstance, wasm;\n[\s\S]*$/,
  `let wasm;
async function __wbg_init({ module_or_path, compiled }) {
    const imports = __wbg_get_imports();
    let instance;
    // A module the page compiled while it parsed (the README's snippet): instantiating it needs
    // no fetch and no compile. A compile that failed, anything else, or a module these imports
    // do not fit (a snippet left naming an older file) falls back to the URL.
    if (compiled) {
        const module = await Promise.resolve(compiled).catch(() => undefined);
        if (module instanceof WebAssembly.Module) instance = await WebAssembly.instantiate(module, imports).catch(() => undefined);
    }
    if (!instance) {
        // The fetch's promise goes to instantiateStreaming as it is: the engine starts compiling
        // as the bytes arrive, without a main-thread task in between to hand it the Response.
        const fetching = typeof Response === 'function' && module_or_path instanceof Response ? module_or_path : fetch(module_or_path);
        try {
            ({ instance } = await WebAssembly.instantiateStreaming(fetching, imports));
        } catch (e) {
            const response = await fetching;
            if (!response.ok) throw new Error(\`failed to fetch Wasm: \${response.status}\`);
            // A body already read means the module itself failed. Otherwise it was served
            // without the wasm MIME type (or the engine cannot stream): instantiate from the
            // bytes, without wasm-bindgen's console warning (the SDK logs nothing unless in
            // debug mode).
            if (response.bodyUsed) throw e;
            ({ instance } = await WebAssembly.instantiate(await response.arrayBuffer(), imports));
        }
    }
    wasm = instance.exports;
    cachedDataViewMemory0 = null;
    cachedUint8ArrayMemory0 = null;
    wasm.${start}();
    return wasm;
}

export { __wbg_init as default };
`,
  "init functions",
);
replace(/\nif \(!\('encodeInto' in cachedTextEncoder\)\) \{\n[\s\S]*?\n\}\n/, "\n", "encodeInto polyfill");
replace(/    if \(realloc === undefined\) \{\n[\s\S]*?\n    \}\n\n/, "", "passStringToWasm0 malloc-only branch");
writeFileSync(gluePath, glue);
