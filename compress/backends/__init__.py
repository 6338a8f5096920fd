"""L3 backends: ONNX Runtime (``ort/``: sessions, the latency harness, the per-layer latency table
measured on what the exporter writes, the fusion check, parity) and TensorRT (``tensorrt/``: the
explicit-quantization rules and the engine). The planner never imports these: it takes the cost
table (``compress.vocab.costs.LatencyCosts``) they produce."""
