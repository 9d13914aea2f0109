"""Tests against real podman (tools/podman-setup) with the locally built base image."""
