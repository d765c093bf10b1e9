#!/usr/bin/env bash
# Applies D1 migrations: `DB` (edge/migrations) and every profile shard wrangler.toml binds
# (`PROFILES_1` …, edge/migrations-profiles; docs/scale.md, "Profile shards").
# Usage: scripts/migrate.sh --local | --remote
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false
shards=$(grep -oE '^binding = "PROFILES_[0-9]+"' wrangler.toml | grep -oE 'PROFILES_[0-9]+' || true)
for binding in DB $shards; do
  npx wrangler d1 migrations apply "$binding" "$@"
done
