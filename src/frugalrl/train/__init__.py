"""The training loop, checkpoints, metrics and schedules."""
