#!/usr/bin/env bash
# Builds the SDK npm package, the Worker and the site. Usage: build.sh [sdk|edge|site|all]...
# Cargo is incremental; each step is quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/node_modules/.bin
log() { printf '\033[1;34mbuild:\033[0m %s\n' "$*"; }

build_sdk() {
  log "sdk -> sdk/npm/index.js + sdk/npm/dist"
  # `cargo rustc --crate-type cdylib`: the crate is also an rlib (for its tests), and cargo drops
  # the release profile's `lto = true` for a crate built as both (no cross-crate inlining or
  # dead-code removal: +2.9 KB gzip of wasm).
  cargo rustc -p seam-sdk --lib --crate-type cdylib --release --target wasm32-unknown-unknown --features panic-trap --quiet
  local out=sdk/npm/dist
  rm -rf "$out"
  mkdir -p "$out"
  wasm-bindgen --target web --no-typescript --out-dir "$out" --out-name seam_sdk \
    "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/seam_sdk.wasm"
  # --always-inline-max-function-size 4 (binaryen's default is 2): inlining the slightly larger
  # trivial wrappers too is smaller overall.
  "$bin/wasm-opt" --always-inline-max-function-size 4 -Oz --gufa -Oz --converge --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-reference-types --enable-multivalue --enable-mutable-globals \
    --strip-producers --strip-target-features --low-memory-unused --flatten --rereloop -Oz -Oz \
    "$out/seam_sdk_bg.wasm" -o "$out/seam_sdk_bg.wasm"
  node scripts/minify-names.mjs "$out/seam_sdk.js" "$out/seam_sdk_bg.wasm"
  node scripts/slim-glue.mjs "$out/seam_sdk.js"
  # One module: the package entry (sdk/npm/src/index.js), the glue and the JS platform hooks
  # (sdk/src/platform/browser.js, emitted by wasm-bindgen under snippets/) bundled into
  # sdk/npm/index.js, so the package is two files: that module + the wasm. A page's request for
  # the wasm then starts one round trip earlier than with the glue as a module of its own.
  # The banner is V8's compile hint: compile every function with the module rather than lazily
  # at first call, which for this module is inside load(), after the wasm is instantiated and on
  # the way to ready (other engines ignore the comment).
  "$bin/esbuild" sdk/npm/src/index.js --bundle --minify --format=esm --log-level=warning --log-override:duplicate-object-key=silent \
    --banner:js='//# allFunctionsCalledOnLoad' --outfile=sdk/npm/index.js --allow-overwrite
  rm -rf "$out/snippets" "$out/seam_sdk.js"
}

build_edge() {
  log "edge -> edge/build"
  # worker-build builds with WASM_BINDGEN_USE_JS_SYS=1, which changes wasm-bindgen's macro output;
  # a target dir of its own stops it and the SDK build from invalidating each other.
  (cd edge && CARGO_TARGET_DIR="$root/target/edge" \
    WASM_BINDGEN_BIN="$(command -v wasm-bindgen)" ESBUILD_BIN="$bin/esbuild" WASM_OPT_BIN="$bin/wasm-opt" \
    worker-build --release --quiet)
}

build_site() {
  log "site -> dist/site"
  node scripts/build-site.mjs
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(all)
for t in "${targets[@]}"; do
  case "$t" in
    sdk) build_sdk ;;
    edge) build_edge ;;
    site) build_site ;;
    all) build_sdk; build_edge; build_site ;;
    *) echo "unknown build target: $t" >&2; exit 2 ;;
  esac
done
