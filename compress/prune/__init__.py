"""Pruning masks: unstructured magnitude, 2:4 semi-structured, output channels."""
