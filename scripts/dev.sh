#!/usr/bin/env bash
# `npm run dev`: set up, build, migrate the local D1, and serve collector + demo site with
# `wrangler dev` (workerd, with local KV and D1 under .wrangler/state).
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false
port=${PORT:-8787}
bash scripts/setup.sh
bash scripts/build.sh
bash scripts/migrate.sh --local
printf '\n\033[1;32mSeam is starting.\033[0m Open http://localhost:%s/ (demo shop; collector at /v1/batch, /health)\n' "$port"
printf 'Demo sign-in: any email, password %s (DEMO_PASSWORD in .dev.vars)\n\n' "$(sed -n 's/^DEMO_PASSWORD=//p' .dev.vars)"
exec npx wrangler dev --port "$port" --ip 127.0.0.1 --show-interactive-dev-session=false
