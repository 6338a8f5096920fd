"""Exporters (installed as ``compress.export``): the ONNX Q/DQ graph writers for TensorRT and ONNX
Runtime. Running, timing and checking what they write is the backends' job (``compress.backends``)."""
