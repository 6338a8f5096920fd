"""Quality metrics of model outputs, per task (text: perplexity and per-token KL)."""
