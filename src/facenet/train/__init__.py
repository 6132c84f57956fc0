"""Training: the loop, self-describing checkpoints, LR schedules and DDP setup."""
