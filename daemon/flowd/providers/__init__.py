"""Providers: where tasks run (local, slurm, mithril)."""
