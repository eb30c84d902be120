#!/usr/bin/env bash
# The GPU checks of the meta-gradient kernel, in one go (about 80 s on an H200 once the machine is up):
# CUDA-vs-CPU-float64 and graph-vs-eager tests, the probe, and the kernel benchmarks (JSON into $OUT).
# Run from the repository root on a CUDA machine whose python3 has torch, pytest and pytest-benchmark:
#   OUT=results/bench bash bench/gpu/run.sh
set -o pipefail
OUT=${OUT:-results/bench}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 60 python3 -m pytest -p no:cacheprovider -o addopts="" -q tests/test_gpu.py tests/test_kernel.py \
    -k "cuda or gpu or graph or split" 2>&1 | tee "$OUT/gpu-tests.txt" | tail -4
timeout 90 python3 bench/gpu/probe.py "$OUT" 2>&1 | tee "$OUT/probe.txt" | grep -v "^ *$" | head -30
timeout 120 python3 -m pytest -p no:cacheprovider -o addopts="" bench/benchmarks/test_kernel.py \
    -k "cuda and not ml45" --benchmark-only --benchmark-json="$OUT/kernel-cuda.json" 2>&1 \
    | tee "$OUT/bench.txt" | grep -A8 "^case"
timeout 100 python3 -m pytest -p no:cacheprovider -o addopts="" bench/benchmarks/test_kernel.py \
    -k "cuda and ml45" --benchmark-only --benchmark-json="$OUT/kernel-cuda-ml45.json" 2>&1 \
    | tee "$OUT/bench-ml45.txt" | grep -A5 "^case"
