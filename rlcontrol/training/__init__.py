"""The shared off-policy training loop, evaluation, logging and checkpoints."""
