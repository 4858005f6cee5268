#!/usr/bin/env bash
# Set up (when needed) and start the server with the embedded defaults on http://127.0.0.1:8080.
# Extra arguments go to `liveavatar serve` (e.g. --port 9000 --data-dir ./data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two malloc arenas instead of 8 per core: the media threads fragmented the others (liveavatar/memory.py).
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
exec .venv/bin/liveavatar serve "$@"
