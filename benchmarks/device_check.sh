#!/usr/bin/env bash
# The one command for a lent GPU machine (no network): install the wheels of --wheels DIR and
# this checkout offline, then run every part of benchmarks/device_check.py within its budget.
#
#   benchmarks/device_check.sh --wheels .wheels [--data DIR] [--out DIR] [--budget 450] [...]
#
# Build DIR here first with benchmarks/pack_wheels.sh .wheels. Results go to --out (default $OUT):
# device_check.json, device_check.md and two logs. PYTHON picks the interpreter (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, even if its install failed
exec "${PYTHON:-python3}" benchmarks/device_check.py "$@"
