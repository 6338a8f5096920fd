"""TensorRT: a structural check of its explicit-quantization rules, and engine build and timing."""
