#!/usr/bin/env bash
# `npm run fuzz`: coverage-guided fuzzing of seam-core with cargo-fuzz (libFuzzer), on the stable
# toolchain. Every target in fuzz/fuzz_targets runs for a bounded time, starting from the committed
# seed corpus (fuzz/corpus/<target>), copied to a scratch dir so new entries never dirty the repo.
# A crash fails the script; its input is saved under fuzz/artifacts/<target>/ (git-ignored).
#
#   FUZZ_SECONDS=60       seconds per target (libFuzzer -max_total_time)
#   FUZZ_SANITIZER=none   none: plain stable. address: ASan, which needs the nightly-only
#                         -Zsanitizer flag, so it is enabled on stable with RUSTC_BOOTSTRAP=1.
#   FUZZ_TARGET_DIR       cargo target dir (default target/fuzz-<sanitizer>)
#   FUZZ_CORPUS_DIR       scratch corpus root (default target/fuzz-corpus)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
# One target dir per sanitizer: different RUSTFLAGS would otherwise rebuild everything each time,
# and cargo caches a failed rustc probe in <target-dir>/.rustc_info.json without keying it on
# RUSTC_BOOTSTRAP, so a dir once used without it keeps failing with "-Z is only accepted on nightly".
target_dir="${FUZZ_TARGET_DIR:-$root/target/fuzz-$sanitizer}"
corpus_root="${FUZZ_CORPUS_DIR:-$root/target/fuzz-corpus}"

if cargo fuzz --version >/dev/null 2>&1; then
  echo "using $(cargo fuzz --version)"
else
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ "$sanitizer" != none ]; then
  export RUSTC_BOOTSTRAP=1
fi

targets=$(cargo fuzz list)
for target in $targets; do
  corpus="$corpus_root/$target"
  mkdir -p "$corpus"
  if [ -d "fuzz/corpus/$target" ]; then
    cp -R "fuzz/corpus/$target/." "$corpus/"
  fi
  echo "== fuzz $target: ${seconds}s, sanitizer $sanitizer, corpus $corpus"
  cargo fuzz run --sanitizer "$sanitizer" --target-dir "$target_dir" "$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1
done
echo "fuzz: no crash in $(echo "$targets" | wc -w) target(s), ${seconds}s each"
