"""Tests against the real single-node Kubernetes cluster of tools/k8s-stack."""
