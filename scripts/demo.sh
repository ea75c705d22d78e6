#!/usr/bin/env bash
# Set up .venv and run the main job end to end, embedded (no services):
#   train TD3 on dm_control cartpole-swingup (real MuJoCo, 100k env steps, a few minutes on 2 cores),
#   evaluate it, write the learning curve (curve.png) and a rollout video (video.mp4),
#   export the policy to ONNX (normalization and action bounds in the graph), print its
#   parity with PyTorch, and time onnxruntime against eager PyTorch per observation,
#   then deploy it through ROS 2 (lifecycle policy node + simulated MuJoCo robot, separate
#   processes, real DDS on this machine only), recording a rosbag2 that becomes a replay buffer.
# Usage: scripts/demo.sh [extra `rlcontrol train` flags, e.g. --steps 40000 --seed 1]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh ros
export MUJOCO_GL="${MUJOCO_GL:-egl}"
run_dir="runs/demo-$(date +%Y%m%d-%H%M%S)"
.venv/bin/rlcontrol train configs/td3_cartpole_swingup.yaml --run-dir "$run_dir" "$@"
.venv/bin/rlcontrol eval "$run_dir" --episodes 5
.venv/bin/rlcontrol export "$run_dir" --out "$run_dir/policy.onnx"
.venv/bin/rlcontrol bench-policy "$run_dir/policy.onnx"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
.venv/bin/rlcontrol deploy --policy "$run_dir/policy.onnx" --robot sim --episodes 2 --real-time-factor 4 \
  --record "$run_dir/deploy_bag"
.venv/bin/rlcontrol bag-to-replay "$run_dir/deploy_bag" --out "$run_dir/deploy_replay.safetensors" \
  --policy "$run_dir/policy.onnx"
echo "learning curve: $run_dir/curve.png   video: $run_dir/video.mp4   policy: $run_dir/policy.onnx"
echo "TensorBoard: .venv/bin/tensorboard --logdir $run_dir/tb"
