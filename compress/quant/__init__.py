"""Quantizers: integer grids, scales, fake-quantization."""
