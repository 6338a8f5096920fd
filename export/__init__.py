"""Exporters (installed as ``compress.export``): ONNX Q/DQ for TensorRT and ONNX Runtime."""
