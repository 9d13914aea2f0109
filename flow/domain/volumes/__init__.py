"""Volumes and data mounts: naming, creation and attachment rules, mount plans."""
