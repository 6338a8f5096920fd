"""Tiny models and exact references for tests and benchmarks."""
