"""Tensors at their real size, without pickle: a quantized model's state dict written as
``safetensors`` with integer weight codes packed at their bit width, and read back bit-exact.

``write_packed_state(path, model)`` / ``read_packed_state(path)`` (``compress.pack.state``).
"""
