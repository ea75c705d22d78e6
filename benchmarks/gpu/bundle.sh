#!/usr/bin/env bash
# Build .gpu/ (git-ignored): what a lent GPU machine lacks to run the GPU tests and the TD3
# throughput benchmark. That machine (docs/benchmarks.md, "GPU") has Python 3.12 with a CUDA
# torch, onnx, onnxruntime and the scientific stack, no network, and a 64 MiB limit on what
# travels, so: wheels for Python 3.12 of MuJoCo, dm_control's and SB3's small dependencies, and
# dm_control itself as a trimmed source tree (pure Python; its locomotion meshes and the dog
# model's assets, 100 MB, are not needed for the suite tasks).
# Usage: benchmarks/gpu/bundle.sh   (then run benchmarks/gpu/run.sh there, carrying .gpu)
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu && mkdir -p .gpu/whl .gpu/site
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
  -d .gpu/whl mujoco==3.17.0 dm-env dm-tree glfw labmaze pyopengl gymnasium farama-notifications shimmy \
  stable-baselines3==2.9.2 lz4
src=$(.venv/bin/python -c "import dm_control, os; print(os.path.dirname(os.path.dirname(dm_control.__file__)))")
(cd "$src" && find dm_control -type f ! -path '*__pycache__*' ! -path '*dog_assets*' ! -path '*test_assets*' \
   ! -name '*_test.py' ! -name '*.png' \( ! -path '*locomotion*' -o -name '*.py' -o -name '*.xml' \) -size -300k) \
  > .gpu/files.txt
tar -C "$src" -cf - -T .gpu/files.txt | tar -C .gpu/site -xf -
du -sh .gpu
