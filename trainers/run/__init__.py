"""The run: config, checks before it, run directory, checkpoints, durable writes, report, set-up, seeds."""
