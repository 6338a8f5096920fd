"""The apply stage: a recipe's pruning and quantization, then recovery by fine-tuning
(``pipeline.py``). The checkpoint directory it is saved as lives in ``compress.checkpoint``."""
