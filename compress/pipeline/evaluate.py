"""Evaluate a model on data: accuracy with labels, perplexity (and mean per-token KL to the float
model) with next-token targets, else mean cosine to a reference model (a checkpoint's reference
is the uncompressed model it came from; any other model needs one named: a model compared with
itself would score 1 whatever it is)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from compress.evaluation import EvalResult

EVAL_BATCH = 256


def evaluate_model(model: "str | nn.Module", data: Any, reference: "str | nn.Module | None" = None,
                   batch_size: int = EVAL_BATCH, weights: str | None = None, split: str | None = None,
                   name: str | None = None, task: str | None = None, seq_len: int | None = None) -> "EvalResult":
    """``model`` (spec, checkpoint directory or module) on ``data`` (held-out split of builtins);
    ``task`` / ``seq_len``: an ``hf:`` model's head and the tokens per block of causal-LM text.
    A causal LM's KL is measured against ``reference`` (default for a checkpoint: its
    uncompressed model; none for a float model without one); a reference spec is loaded with the
    same ``task``. A checkpoint directory's result has its bytes on disk (``checkpoint_bytes``)."""
    from dataclasses import replace
    from pathlib import Path

    from compress.checkpoint.format import directory_bytes, is_checkpoint
    from compress.checkpoint.load import reference_model
    from compress.errors import InputError
    from compress.evaluation import evaluate
    from compress.metrics.text import has_token_targets
    from compress.pipeline.checks import check_inputs
    from compress.pipeline.inputs import data_source, resolve_model

    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    module, label = resolve_model(model, weights, task)
    source = data_source(data, "heldout", module, split, seq_len)
    check_inputs(module, name or label, source, compress=False)
    ref = None
    if not source.has_targets or has_token_targets(source):
        if reference is not None:
            ref = resolve_model(reference, task=task if isinstance(reference, str) else None)[0]
        elif isinstance(model, str):
            ref = reference_model(model)
        if ref is None and not source.has_targets:
            raise InputError(f"data {source.name} has no labels: give reference=MODEL, the model to compare "
                             f"{label}'s outputs with (a model compared with itself scores 1 whatever it is)")
    result = evaluate(module, name or label, source, ref, batch_size)
    if isinstance(model, str) and is_checkpoint(Path(model)):
        result = replace(result, checkpoint_bytes=directory_bytes(Path(model)))
    return result
