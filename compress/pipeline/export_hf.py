"""The ``hf`` export target: a transformers folder in the compressed-tensors ``pack-quantized``
layout (``compress.export.hf``), with the source folder's tokenizer files copied beside it, and
parity measured by loading the folder back through transformers.

Parity compares, on the same inputs, the transformers model inside ours (as compressed) with the
one loaded from the written folder: max |Δ| and mean cosine over the examples of its first
output. Loading needs the ``compressed-tensors`` package (not a dependency of compress: its
``[hf]`` users have it); without it parity says so and why instead of failing the export."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compress.data.source import DataSource

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json")
PARITY_EXAMPLES = 64


@dataclass(frozen=True)
class HFArtifact:
    """The written folder and its parity with our model (or why parity was skipped)."""

    target: str
    folder: Path
    parity: dict[str, Any]

    def to_dict(self) -> dict[str, object]:
        return {"target": self.target, "folder": str(self.folder), "parity": self.parity}


def export_hf_folder(model: "nn.Module", data: "DataSource", out_dir: Path, force: bool = False) -> HFArtifact:
    """Write ``out_dir/hf`` and measure its parity on the first examples of ``data``."""
    from compress.export.hf import export_hf
    from compress.lock import output_lock
    from compress.models.hf import hf_source

    folder = out_dir / "hf"
    if folder.exists() and not force:
        raise InputError(f"{folder} exists; set force=True to replace it or choose another output directory")
    source = hf_source(model)
    if source is not None and source.transposed:
        raise InputError(f"the hf target cannot write transposed Conv1D layers back yet ({source.transposed[0]}, "
                         f"…); export this model with target ort or onnx")
    out_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir):
        try:
            export_hf(model, folder)
            if source is not None:
                for name in TOKENIZER_FILES:
                    if (source.folder / name).is_file():
                        shutil.copyfile(source.folder / name, folder / name)
            return HFArtifact("hf", folder, hf_parity(model, folder, data))
        except BaseException:  # a failed export leaves no half folder to refuse the next attempt
            shutil.rmtree(folder, ignore_errors=True)
            raise


def hf_parity(model: "nn.Module", folder: Path, data: "DataSource") -> dict[str, Any]:
    """max |Δ| and mean per-example cosine between the transformers model inside ``model`` and the
    same class loaded from ``folder``, on the inputs ``model`` passes it for ``data``'s first
    examples; ``{"status": "skipped", "reason": ...}`` without compressed-tensors."""
    import importlib.util

    if importlib.util.find_spec("compressed_tensors") is None:
        return {"status": "skipped", "reason": "loading it back needs the compressed-tensors package"}
    import torch

    from compress.export.hf import pretrained_part

    _, ours = pretrained_part(model)
    loaded = type(ours).from_pretrained(folder).eval()
    batch = next(iter(data.batches(PARITY_EXAMPLES)))
    calls: list[tuple[tuple, dict, torch.Tensor]] = []
    hook = ours.register_forward_hook(lambda _m, args, kwargs, out: calls.append((args, kwargs, _first(out))),
                                      with_kwargs=True)
    try:
        with torch.no_grad():
            model(*batch.inputs)
            expected = [(_first(loaded(*args, **kwargs)), out) for args, kwargs, out in calls]
    finally:
        hook.remove()
    got = torch.cat([g.flatten(1) for g, _ in expected])
    want = torch.cat([w.flatten(1) for _, w in expected])
    cosine = torch.nn.functional.cosine_similarity(got.double(), want.double(), dim=1)
    return {"status": "measured", "max_abs_error": float((got - want).abs().max()),
            "mean_cosine": float(cosine.mean()), "num_examples": int(got.shape[0])}


def _first(output: Any) -> "torch.Tensor":
    """The first tensor of a transformers output (last_hidden_state / logits) or a plain tensor."""
    return output if hasattr(output, "flatten") else output[0]
