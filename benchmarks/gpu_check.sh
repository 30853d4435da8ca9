#!/usr/bin/env bash
# Accelerator check for a GPU host that already has JAX with CUDA (nothing downloaded).
#
#   bash benchmarks/gpu_check.sh [--config.trial.micro_batch_size=16 ...]
#
# Arguments are config overrides, given to the baseline and the search alike.
# In about 5 minutes on one H100/H200 (hard limit 9), printing key: value lines:
#   1. benchmarks/gpu_check.py: the measured bf16 matmul ceiling, the attention kernel
#      'auto' picks (cuDNN flash attention where it runs) checked against the explicit
#      einsums, the configs/h100.py baseline trained for a short budget on one GPU
#      (tokens/s, compile seconds, memory, MFU over the measured ceiling), and a few
#      data-parallel steps over all local GPUs where there are several;
#   2. a short search (the PPO agent, 2 baseline runs for sigma and a proposal, short
#      budgets) in a fresh workdir, summarised as search_* lines;
#   3. `mfu: X` last, the one-GPU baseline's (step 1).
# Python packages the image lacks (ml_collections, distrax, ...) are installed from
# wheels in GPU_CHECK_WHEELS, made beforehand where a package index is reachable by
# `bash benchmarks/gpu_wheels.sh` (into benchmarks/results/tmp/gpu_wheels, the default).
# Environment (defaults in brackets):
#   GPU_CHECK_CONFIG         config file [configs/h100.py]
#   GPU_CHECK_BUDGET         training seconds of the baseline [40]
#   GPU_CHECK_DP_STEPS       steps of the data-parallel trial [20]
#   GPU_CHECK_MATMUL_SIZE    side of the matmul that measures the ceiling [8192]
#   GPU_CHECK_SEARCH_TRIALS  trials of the short search, 0 = no search [3]
#   GPU_CHECK_SEARCH_BUDGET  training seconds of each search trial [15]
#   GPU_CHECK_WHEELS         folder of wheels for missing packages [benchmarks/results/tmp/gpu_wheels]
#   GPU_CHECK_ALLOW_CPU      1: run on CPU too, to check the script itself [0]
# A logic check on a CPU machine, with the tiny config on 2 fake devices:
#   GPU_CHECK_CONFIG=configs/tiny.py GPU_CHECK_BUDGET=5 GPU_CHECK_MATMUL_SIZE=512 \
#     GPU_CHECK_SEARCH_BUDGET=2 GPU_CHECK_ALLOW_CPU=1 \
#     XLA_FLAGS=--xla_force_host_platform_device_count=2 bash benchmarks/gpu_check.sh
set -euo pipefail

cd "$(dirname "$0")/.."
config="${GPU_CHECK_CONFIG:-configs/h100.py}"
wheels="${GPU_CHECK_WHEELS:-benchmarks/results/tmp/gpu_wheels}"
search_trials="${GPU_CHECK_SEARCH_TRIALS:-3}"
allow_cpu=()
if [[ "${GPU_CHECK_ALLOW_CPU:-0}" == 1 ]]; then
  allow_cpu=(--allow_cpu)
fi

# Missing packages from the wheels folder, into a folder of their own (the image's
# packages are left as they are).
imports='import absl, distrax, etils, flax, jax, ml_collections, numpy, optax, orbax.checkpoint'
if ! python3 -c "${imports}" 2>/dev/null; then
  if [[ -d "${wheels}" ]]; then
    site="$(mktemp -d)/site"
    python3 -m pip install --quiet --no-index --no-deps --target="${site}" "${wheels}"/*.whl
    export PYTHONPATH="${site}${PYTHONPATH:+:${PYTHONPATH}}"
  fi
  python3 -c "${imports}" || {
    echo "gpu_check: packages missing (above); make ${wheels} with benchmarks/gpu_wheels.sh" >&2
    exit 1
  }
fi

# pystdlib is embedded (no download; throughput does not depend on the bytes); its val
# split has about 470 kB of scorable bytes, so 256 KiB of it are scored.
data=(--config.data.source=pystdlib --config.trial.val_bytes=262144)
log="$(mktemp)"
status=0
timeout --signal=INT --kill-after=10s 300s python3 benchmarks/gpu_check.py \
  --config="${config}" "${data[@]}" \
  --budget_seconds="${GPU_CHECK_BUDGET:-40}" \
  --dp_steps="${GPU_CHECK_DP_STEPS:-20}" \
  --matmul_size="${GPU_CHECK_MATMUL_SIZE:-8192}" \
  "${allow_cpu[@]}" "$@" 2>"${log}.err" | tee "${log}" || status=$?
if [[ ${status} -ne 0 ]]; then
  tail -n 30 "${log}.err" >&2
  [[ ${status} -eq 124 ]] && echo "gpu_check: the baseline stopped after 300 s" >&2
  exit "${status}"
fi

if [[ "${search_trials}" -gt 0 ]]; then
  workdir="$(mktemp -d)/search"
  start=$(date +%s)
  timeout --signal=INT --kill-after=10s 220s python3 main.py --config="${config}" \
    --workdir="${workdir}" --quiet "${data[@]}" \
    --config.trial.budget_seconds="${GPU_CHECK_SEARCH_BUDGET:-15}" \
    --config.search.max_trials="${search_trials}" --config.search.noise_repeats=2 \
    --config.search.baseline_cache=none "$@" >"${log}.search" 2>&1 || status=$?
  echo "search_seconds: $(( $(date +%s) - start ))"
  if [[ ${status} -ne 0 ]]; then
    tail -n 30 "${log}.search" >&2
    reason="exit ${status}"
    [[ ${status} -eq 124 ]] && reason="stopped after 220 s"
    echo "search_status: failed (${reason})"
  else
    echo "search_status: ok"
  fi
  python3 benchmarks/gpu_check.py --summarize_search="${workdir}" || true
fi
grep '^mfu: ' "${log}" | tail -n 1
exit "${status}"
