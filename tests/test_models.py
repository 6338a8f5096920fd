"""Model specs: builtin models (trained / pretrained), torchvision, factories, saved programs, weights."""

from pathlib import Path

import pytest
import torch
from torch import nn

from compress.data.spec import load_data
from compress.models.mnist_cnn import MnistCNN, TrainConfig, train_mnist_cnn
from compress.models.spec import build_model
from tests.helpers.sources import TINY_MODEL_SOURCE


def test_mnist_cnn_architecture_has_bn_depthwise_and_residual() -> None:
    model = MnistCNN()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert any(c.groups == c.in_channels > 1 for c in convs), "no depthwise conv"
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    block = model.block
    x = torch.randn(2, 32, 7, 7)
    with torch.no_grad():  # the residual: zeroing the branch leaves relu(x)
        for p in block.pw.parameters():
            p.zero_()
        assert torch.equal(block.eval()(x), torch.relu(x))


def test_mnist_cnn_training_is_deterministic() -> None:
    config = TrainConfig(epochs=1)
    first, second = train_mnist_cnn(config), train_mnist_cnn(config)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_builtin_mnist_cnn_reaches_97_percent_on_heldout() -> None:
    model = build_model("builtin:mnist-cnn")
    heldout = load_data("builtin:mnist5k", None, "heldout")
    with torch.no_grad():
        accuracy = (model(heldout.inputs[0]).argmax(1) == heldout.targets).float().mean().item()
    assert accuracy >= 0.97, f"held-out accuracy {accuracy:.4f}"
    assert not model.training


def test_builtin_minilm_matches_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    from compress.models.minilm import model_dir, tokenize

    texts = ["The river froze early this winter.", "Compilers turn source code into machine code."]
    model = build_model("builtin:minilm")
    with torch.no_grad():
        ours = model(*tokenize(texts))
    reference = SentenceTransformer(str(model_dir()), device="cpu").encode(texts, convert_to_tensor=True)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(2), atol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(ours, reference.float()).min().item()
    assert cosine > 0.9999, f"cosine to sentence-transformers {cosine}"


def test_torchvision_model() -> None:
    model = build_model("torchvision:resnet18")
    assert sum(p.numel() for p in model.parameters()) == 11_689_512


def test_factory_and_weights_round_trip(factory_file, tmp_path: Path) -> None:
    spec = f"{factory_file(TINY_MODEL_SOURCE)}:tiny"
    trained = build_model(spec)
    with torch.no_grad():
        trained[1].weight.mul_(3.0)
    weights = tmp_path / "w.pt"
    torch.save(trained.state_dict(), weights)
    x = torch.randn(4, 1, 8, 8)
    assert not torch.allclose(build_model(spec)(x), trained(x))
    assert torch.equal(build_model(spec, str(weights))(x), trained(x))


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_saved_programs(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.randn(3, 1, 8, 8)
    path = tmp_path / f"model.{'pt' if kind == 'torchscript' else 'pt2'}"
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(model), path)
    else:
        torch.export.save(torch.export.export(model, (x,)), path)
    with torch.no_grad():
        assert torch.allclose(build_model(str(path))(x), model(x))


def test_length_bucketed_token_batches_leave_embeddings_unchanged() -> None:
    from compress.data.spec import load_data

    model = build_model("builtin:minilm")
    data = load_data("builtin:sentences", "heldout", "heldout")
    with torch.no_grad():
        padded = model(*data.inputs)
        lengths = data.inputs[1].sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        bucketed = torch.cat([model(*batch.inputs) for batch in data.batches(16)])
    widths = [batch.inputs[0].shape[1] for batch in data.batches(16)]
    assert widths == sorted(widths) and widths[0] < data.inputs[0].shape[1]
    assert torch.allclose(bucketed, padded[order], atol=1e-5)
