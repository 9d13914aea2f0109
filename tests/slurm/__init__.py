"""Tests of the slurm provider against a real Slurm and sshd (tools/test-stack)."""
