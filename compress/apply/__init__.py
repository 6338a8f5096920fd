"""The apply stage: a recipe's pruning and quantization, recovery by fine-tuning, and the
compressed checkpoint directory that reloads without the recipe."""
