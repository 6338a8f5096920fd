"""Triton kernels (installed as ``compress.kernels``), each with a pure-PyTorch reference."""
