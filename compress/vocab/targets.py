"""Export target names, defined once: ``onnx`` (the Q/DQ graph only), ``ort`` (ONNX Runtime CPU:
integer bias, fusion check, parity, latency), ``tensorrt`` (TensorRT's explicit-quantization rules,
engine when available)."""

EXPORT_TARGETS = ("onnx", "ort", "tensorrt")
