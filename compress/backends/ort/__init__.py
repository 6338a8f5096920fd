"""ONNX Runtime on CPU: sessions, latency, per-layer latency table, fusion check, parity."""
