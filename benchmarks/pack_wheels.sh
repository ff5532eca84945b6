#!/usr/bin/env bash
# benchmarks/pack_wheels.sh DIR: download the wheels certiqa needs on a lent GPU machine, for
# benchmarks/device_check.sh --wheels DIR. That machine has Python 3.12 on x86-64 with PyTorch,
# numpy, scipy, statsmodels, pillow, tqdm, pytest, hypothesis and mpmath, and no network: it
# lacks kornia (and kornia's own kornia_rs). Pinned to the versions the test suite runs with.
# DIR stays out of git (.gitignore: /.wheels/); about 3 MiB.
set -euo pipefail
dir=${1:?usage: benchmarks/pack_wheels.sh DIR (e.g. .wheels)}
python=${PYTHON:-python3}
mkdir -p "$dir"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dir" \
    kornia==0.9.0 kornia_rs==0.2.0
du -sh "$dir"
ls "$dir"
