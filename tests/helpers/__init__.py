"""Helpers shared by several test modules and benchmarks (no test module imports another)."""
