"""Second-order layer reconstruction: layer input statistics (H = 2XXᵀ/N), GPTQ/OBQ quantization,
SparseGPT/Wanda pruning and the true-sequential driver."""
