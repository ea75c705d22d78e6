"""Deploying trained policies: ONNX export (`export`, needs torch) and the runtime that
robots use (`runtime`, needs only numpy, onnx and onnxruntime).

This package imports nothing itself, so `from rlcontrol.deploy import runtime` on a
robot never pulls in PyTorch or the training code.
"""
