"""The heads an ``hf:`` model can be loaded with (``compress.models.hf``); torch-free, so the CLI
and the recipe schema can name them without importing torch."""

TASKS = ("causal-lm", "sequence-classification", "embedding")
