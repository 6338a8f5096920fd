"""The ``hf`` export target as ``compress export`` runs it: a tiny Llama loaded through hf:PATH,
4-bit weight-only in blocks of 16, written as a transformers folder with its tokenizer; parity
measured by loading it back where compressed-tensors is installed (else skipped, saying why);
refusals for what it cannot write and for an existing folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from torch import nn

from compress.data.builtin import sentence_texts
from compress.data.text import load_text
from compress.errors import InputError
from compress.models.hf import build_hf_model
from compress.pipeline.export_hf import export_hf_folder
from compress.quant.quantize import quantize_model_
from compress.quant.records import QuantSettings
from tests.helpers.hf_tiny import save_model

pytest.importorskip("transformers")
W4 = QuantSettings(weight_bits=4, act_bits=None, weight_block=16)


def _quantized(kind: str, root: Path) -> tuple[nn.Module, object]:
    folder = save_model(kind, root / kind)
    text = root / "text.txt"
    text.write_text("\n".join(sentence_texts()[:16]), encoding="utf-8")
    model = build_hf_model(folder)
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    quantize_model_(model, dict.fromkeys(linears, W4), [])
    return model, load_text(text, folder, "causal-lm", seq_len=8)


def test_llama_folder_with_tokenizer_and_parity(tmp_path: Path) -> None:
    model, data = _quantized("llama", tmp_path)
    artifact = export_hf_folder(model, data, tmp_path / "out")
    folder = tmp_path / "out" / "hf"
    assert artifact.folder == folder and (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["format"] == "pack-quantized"
    assert (folder / "tokenizer.json").is_file()  # copied from the source folder
    if importlib.util.find_spec("compressed_tensors") is None:
        assert artifact.parity == {"status": "skipped",
                                   "reason": "loading it back needs the compressed-tensors package"}
    else:
        assert artifact.parity["status"] == "measured" and artifact.parity["mean_cosine"] >= 0.9999, artifact.parity
    with pytest.raises(InputError, match="exists; set force=True"):
        export_hf_folder(model, data, tmp_path / "out")


def test_conv1d_models_are_refused_in_one_line(tmp_path: Path) -> None:
    model, data = _quantized("gpt2", tmp_path)
    with pytest.raises(InputError, match="transposed Conv1D"):
        export_hf_folder(model, data, tmp_path / "out")
    assert not (tmp_path / "out" / "hf").exists()
