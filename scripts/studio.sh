#!/usr/bin/env bash
# make studio: serve every zoo model with a fresh admin key, and say where the studio is.
set -eu
cd "$(dirname "$0")/.."
PORT="${PORT:-8000}"
STATE="${AIGC_STATE:-runs/studio}"
models=()
for card in zoo/*/MODEL_CARD.md; do
  [ -e "$card" ] || continue
  models+=(--model "zoo:$(basename "$(dirname "$card")")")
done
[ ${#models[@]} -gt 0 ] || { echo "error: no models in zoo/" >&2; exit 2; }
export AIGC_ADMIN_KEY="aigc-$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))')"
echo "studio: http://127.0.0.1:${PORT}/"
echo "admin key (paste it into the studio; valid while this runs): ${AIGC_ADMIN_KEY}"
exec .venv/bin/aigc serve "${models[@]}" --port "$PORT" --state-dir "$STATE"
