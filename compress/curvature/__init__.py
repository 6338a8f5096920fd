"""Curvature of the loss: matrix-free Hessian / Gauss-Newton products over a whole dataset,
per-layer traces with error bars, top eigenvalues and spectral density."""
