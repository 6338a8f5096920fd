"""compress: curvature-driven model compression for PyTorch.

Importing this package imports nothing heavy (no torch, onnxruntime, transformers, torchvision or
tensorrt); each stage imports what it needs when it runs.
"""

__version__ = "0.1.0"
