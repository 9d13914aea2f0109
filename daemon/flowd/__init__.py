"""flowd: the per-user daemon that owns tasks, logs, volumes and providers."""
