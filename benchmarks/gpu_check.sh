#!/usr/bin/env bash
# Accelerator check for a GPU host that already has JAX with CUDA (no installs).
#
#   bash benchmarks/gpu_check.sh [--config.trial.micro_batch_size=16 ...]
#
# Trains the configs/h100.py baseline on one GPU for a short budget, then a few
# data-parallel steps over all local GPUs, and prints tokens/s, compile seconds and MFU
# against the card's measured bf16 matmul ceiling; `mfu: X` is the last line. Stops
# itself after 8 minutes. Environment (defaults in brackets):
#   GPU_CHECK_CONFIG       config file [configs/h100.py]
#   GPU_CHECK_BUDGET       training seconds of the baseline [60]
#   GPU_CHECK_DP_STEPS     steps of the data-parallel trial [20]
#   GPU_CHECK_MATMUL_SIZE  side of the matmul that measures the ceiling [8192]
#   GPU_CHECK_ALLOW_CPU    1: run on CPU too, to check the script itself [0]
# A logic check on a CPU machine, with the tiny config on 2 fake devices:
#   GPU_CHECK_CONFIG=configs/tiny.py GPU_CHECK_BUDGET=5 GPU_CHECK_MATMUL_SIZE=512 \
#     GPU_CHECK_ALLOW_CPU=1 XLA_FLAGS=--xla_force_host_platform_device_count=2 \
#     bash benchmarks/gpu_check.sh
set -euo pipefail

cd "$(dirname "$0")/.."
config="${GPU_CHECK_CONFIG:-configs/h100.py}"
allow_cpu=()
if [[ "${GPU_CHECK_ALLOW_CPU:-0}" == 1 ]]; then
  allow_cpu=(--allow_cpu)
fi

# pystdlib is embedded (no download; throughput does not depend on the bytes); its val
# split holds 1.2 MB, so 1 MiB of it is scored.
status=0
timeout --signal=INT --kill-after=10s 470s python benchmarks/gpu_check.py \
  --config="${config}" \
  --config.data.source=pystdlib \
  --config.trial.val_bytes=1048576 \
  --budget_seconds="${GPU_CHECK_BUDGET:-60}" \
  --dp_steps="${GPU_CHECK_DP_STEPS:-20}" \
  --matmul_size="${GPU_CHECK_MATMUL_SIZE:-8192}" \
  "${allow_cpu[@]}" "$@" || status=$?
if [[ ${status} -eq 124 ]]; then
  echo "gpu_check: stopped after 470 s (limit 8 minutes)" >&2
fi
exit "${status}"
