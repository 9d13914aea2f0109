"""The kubernetes provider's pure decisions: offers from nodes, Job specs as data, pod states."""
