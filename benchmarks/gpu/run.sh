#!/usr/bin/env bash
# On a lent GPU machine (the device tool; .gpu/ built by benchmarks/gpu/bundle.sh and carried):
# the GPU tests, then the TD3 throughput benchmark with rlcontrol and Stable-Baselines3 both on
# CUDA (arms: ARMS, default train.compile, SB3, eager, train.cuda_graphs). Results go to $OUT (or ./gpu-results).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-gpu-results}"; mkdir -p "$out"
export PYTHONUNBUFFERED=1 MUJOCO_GL=disable
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH="$PWD:$PWD/.gpu/site:/tmp/site"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name(0))"
  nproc; } 2>&1 | tee "$out/machine.txt"
timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tee "$out/gpu_tests.log"
timeout "${BENCH_TIMEOUT:-330}" python3 -m benchmarks.td3_throughput --device cuda --steps "${STEPS:-3000}" \
  --rounds "${ROUNDS:-2}" --arms "${ARMS:-ours,sb3,eager,graphs}" --threads 2 --json 2>&1 | tee "$out/td3_throughput_cuda.log"
timeout "${INFER_TIMEOUT:-240}" python3 -m benchmarks.gpu_inference --out "$out" 2>&1 | tee "$out/gpu_inference.log"
