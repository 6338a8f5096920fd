"""Export target names, defined once: ``onnx`` (the Q/DQ graph only), ``ort`` (ONNX Runtime CPU:
integer bias, fusion check, parity, latency), ``tensorrt`` (TensorRT's explicit-quantization rules,
engine when available), ``hf`` (a transformers folder in the compressed-tensors layout, for
transformers / vLLM; weight-only layers)."""

EXPORT_TARGETS = ("onnx", "ort", "tensorrt", "hf")
ONNX_TARGETS = ("onnx", "ort", "tensorrt")
