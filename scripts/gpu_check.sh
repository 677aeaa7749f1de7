#!/usr/bin/env bash
# One call on a lent GPU machine: build, test, sanitize and measure din_fast; report into OUT_DIR.
#   bash scripts/gpu_check.sh OUT_DIR              (GPU: H100/H200, 16 cores, no network; <= 8 minutes)
#   bash scripts/gpu_check.sh --dry-run OUT_DIR    (the same pipeline on CPU with tiny shapes; CI runs it)
# Stages, time boxes, outputs: scripts/gpu_check.py's docstring and README "GPU check".
set -uo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
