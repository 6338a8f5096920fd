"""hf:PATH models through the command line with text data: tiny GPT-2 (Conv1D layers, a head tied
to the input embeddings), Llama (untied head) and BERT-classifier checkpoints built from configs
run ``compress curvature`` → ``plan`` → ``apply`` (GPTQ, 4-bit blocks; fine-tuning on the token
loss for Llama and the classifier) → ``export`` (ONNX Runtime, parity) → ``eval``.

The tie is never compressed: a layer whose weight is shared with another module is not a
compressible layer, so GPT-2's head is neither planned nor quantized, stays the embedding's one
tensor after apply and reload, and is one initializer in the ONNX graph.

Plans choose 4 bits or float per layer; ``apply`` gives the 4-bit layers blocks of 16 input
features (the override below), which ONNX Runtime runs as MatMulNBits: a Linear on token inputs
exports as MatMul, and ORT has integer kernels for it only as 4-bit blocks or int8 dynamic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.hf_tiny import MAX_TOKENS, save_model

pytest.importorskip("transformers")

SEQ_LEN = 16
DATA = {"gpt2": "text.txt", "llama": "text.txt", "bert-classifier": "labels.jsonl"}
CURVATURE = ["--max-products", "16", "--deflation-steps", "2", "--slq-runs", "1", "--top-k", "1",
             "--max-samples", "8", "--batch-size", "8"]
BLOCKS = ["quantization.layers.default.weight_bits=4", "quantization.layers.default.act_bits=null",
          "quantization.layers.default.weight_block=16"]
FINETUNE = ["finetune.mode=qat+kd", "finetune.max_steps=2", "finetune.batch_size=8", "finetune.lr=0.001",
            "finetune.sharpness_every=0"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """80 sentences as text and 60 labelled ones as JSON lines; checkpoint folders come from
    ``checkpoint``."""
    from compress.data.builtin import sentence_texts

    root = tmp_path_factory.mktemp("hf-cli")
    sentences = sentence_texts()
    (root / "text.txt").write_text("\n".join(sentences[:80]), encoding="utf-8")
    (root / "labels.jsonl").write_text("\n".join(json.dumps({"text": text, "label": i % 3})
                                                 for i, text in enumerate(sentences[:60])), encoding="utf-8")
    return root


def checkpoint(root: Path, kind: str) -> Path:
    """The tiny ``kind`` checkpoint folder under ``root``, saved on first use."""
    folder = root / kind
    return folder if folder.is_dir() else save_model(kind, folder)


def _pipeline(cli, root: Path, kind: str, out: Path, finetune: list[str]) -> dict[str, Path]:
    """curvature → plan → apply → export → eval through the CLI; each must exit 0."""
    model, data = f"hf:{checkpoint(root, kind)}", str(root / DATA[kind])
    text = ["--data", data, "--seq-len", str(SEQ_LEN)]
    paths = {name: out / f"{name}{suffix}" for name, suffix in
             [("curvature", ".json"), ("plan", ".yaml"), ("checkpoint", ""), ("onnx", ""), ("eval", ".json"),
              ("export", ".json")]}
    steps = [
        ["curvature", model, *text, *CURVATURE, "--json", str(paths["curvature"])],
        ["plan", model, *text, "--curvature", str(paths["curvature"]), "--max-samples", "32", "--batch-size", "16",
         "--bits", "4,fp32", "--budget", "avg_bits=12", "-o", str(paths["plan"])],
        ["apply", str(paths["plan"]), *BLOCKS, *finetune, "-o", str(paths["checkpoint"]), "--batch-size", "16"],
        ["export", str(paths["checkpoint"]), "--target", "ort", "-o", str(paths["onnx"]),
         "--json", str(paths["export"])],
        ["eval", str(paths["checkpoint"]), *text, "--json", str(paths["eval"])],
    ]
    for argv in steps:
        result = cli(*argv)
        assert result.code == 0, f"compress {argv[0]}: {result.err}"
    return paths


def _four_bit_layers(plan: dict) -> list[str]:
    return [name for name, rule in plan["quantization"]["layers"].items() if rule and rule["weight_bits"] == 4]


def _check_outcome(paths: dict[str, Path], metric: str) -> tuple[dict, dict]:
    """The plan's 4-bit layers were quantized by GPTQ; eval of the checkpoint reproduces apply's
    own evaluation; ORT matches the PyTorch model. Returns (plan, checkpoint info)."""
    plan = yaml.safe_load(paths["plan"].read_text())
    info = json.loads((paths["checkpoint"] / "compressed.json").read_text())
    four_bit = _four_bit_layers(plan)
    assert four_bit, "the budget should put some layers at 4 bits"
    quantized = info["quant"]["layers"]
    assert sorted(quantized) == sorted(four_bit)
    assert {quantized[name]["settings"]["method"] for name in four_bit} == {"gptq"}
    evaluation = json.loads(paths["eval"].read_text())
    after = info["evaluation"]["after"]
    assert evaluation["metric"] == after["metric"] == metric
    assert evaluation["value"] == pytest.approx(after["value"], rel=1e-9)
    artifact = json.loads(paths["export"].read_text())
    assert artifact["parity"]["max_error_steps"] < 1 and artifact["parity"]["top1_agreement"] == 1.0
    return plan, info


def test_gpt2_conv1d_layers_are_planned_and_quantized_and_the_tied_head_stays_tied(cli, root, tmp_path,
                                                                                   single_thread) -> None:
    import onnx

    from compress.checkpoint.load import load_model
    from compress.models.hf import build_hf_model, hf_source

    paths = _pipeline(cli, root, "gpt2", tmp_path, finetune=[])
    plan, info = _check_outcome(paths, "perplexity")
    float_model = build_hf_model(root / "gpt2")
    conv1d = hf_source(float_model).transposed
    assert len(conv1d) == 8
    assert sorted(plan["quantization"]["layers"]) == sorted(conv1d)  # every Conv1D planned, the tied head not
    assert plan["data"]["seq_len"] == SEQ_LEN
    assert "model.lm_head" not in json.loads(paths["curvature"].read_text())["layers"]
    before, after = info["evaluation"]["before"], info["evaluation"]["after"]
    assert before["mean_token_kl"] == pytest.approx(0, abs=1e-12) and after["mean_token_kl"] > 0

    compressed = load_model(str(paths["checkpoint"]))
    network = compressed.model
    assert network.lm_head.weight is network.transformer.wte.weight
    assert torch.equal(network.transformer.wte.weight, float_model.model.transformer.wte.weight)  # float, untouched
    assert all(network.get_submodule(name.removeprefix("model.")).settings.weight_bits == 4
               for name in _four_bit_layers(plan))

    graph = onnx.load(str(paths["onnx"] / "model.onnx")).graph
    embedding = [init.name for init in graph.initializer if tuple(init.dims) == (96, 32) and "wte" in init.name]
    assert len(embedding) == 1 and not [init for init in graph.initializer if "lm_head" in init.name]
    readers = {node.op_type for node in graph.node if embedding[0] in node.input}
    assert "Gather" in readers and readers - {"Gather"}, readers  # the lookup and the head read one tensor
    fused = json.loads(paths["export"].read_text())["fusion"]["fused"]
    assert fused == {"MatMulNBits": len(_four_bit_layers(plan))}


@pytest.mark.slow
def test_llama_untied_head_is_planned_and_finetuned_on_the_token_loss(cli, root, tmp_path, single_thread) -> None:
    paths = _pipeline(cli, root, "llama", tmp_path, finetune=FINETUNE)
    plan, info = _check_outcome(paths, "perplexity")
    assert "model.lm_head" in plan["quantization"]["layers"]
    assert info["finetune"]["steps"] == 2 and all(map(torch.isfinite, map(torch.tensor, info["finetune"]["losses"])))
    fused = json.loads(paths["export"].read_text())["fusion"]["fused"]
    assert fused == {"MatMulNBits": len(_four_bit_layers(plan))}


@pytest.mark.slow
def test_bert_classifier_on_labelled_json_lines(cli, root, tmp_path, single_thread) -> None:
    paths = _pipeline(cli, root, "bert-classifier", tmp_path, finetune=FINETUNE)
    _, info = _check_outcome(paths, "accuracy")
    assert info["evaluation"]["after"]["num_samples"] == 60 and info["finetune"]["steps"] == 2


def _one_line_error(result, *words: str) -> None:
    assert result.code == 2, result.err
    line = result.err.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert all(word in line for word in words), line


def test_bad_input_is_one_line_and_exit_status_2(cli, root, tmp_path) -> None:
    model, text = f"hf:{checkpoint(root, 'gpt2')}", str(root / "text.txt")
    not_checkpoint = tmp_path / "not-a-checkpoint"
    not_checkpoint.mkdir()
    (not_checkpoint / "weights.bin").write_bytes(b"\0")
    _one_line_error(cli("curvature", f"hf:{not_checkpoint}", "--data", text, "--seq-len", "8"),
                    "no config.json", "not a transformers checkpoint")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\n", encoding="utf-8")
    _one_line_error(cli("eval", model, "--data", str(blank), "--seq-len", "8"), "no usable samples")
    _one_line_error(cli("plan", model, "--data", text, "--seq-len", str(MAX_TOKENS + 1), "--budget", "avg_bits=4",
                        "-o", str(tmp_path / "p.yaml")),
                    f"--seq-len {MAX_TOKENS + 1} exceeds the model's maximum sequence length {MAX_TOKENS}")
    _one_line_error(cli("eval", model, "--data", text), "--seq-len is required")
    _one_line_error(cli("eval", "builtin:mnist-cnn", "--data", text), "hf:FOLDER")
    _one_line_error(cli("eval", model, "--data", "builtin:mnist5k", "--seq-len", "8"), "--seq-len applies to text")
    _one_line_error(cli("eval", "builtin:mnist-cnn", "--data", "builtin:mnist5k", "--task", "causal-lm"),
                    "task applies to hf:FOLDER models")
    assert not (tmp_path / "p.yaml").exists()


def test_task_chooses_the_head_and_is_recorded_for_apply(cli, root, tmp_path, single_thread) -> None:
    """--task embedding loads the classifier's encoder as a sentence embedder: its text data has
    no labels, so eval compares with a reference; the plan records the task and the recipe
    rebuilds that model."""
    model, data = f"hf:{checkpoint(root, 'bert-classifier')}", str(root / "labels.jsonl")
    evaluated = cli("eval", model, "--task", "embedding", "--data", data, "--reference", model, "--json",
                    str(tmp_path / "e.json"))
    assert evaluated.code == 0, evaluated.err
    assert json.loads((tmp_path / "e.json").read_text())["metric"] == "mean_cosine"
    plan = tmp_path / "plan.yaml"
    planned = cli("plan", model, "--task", "embedding", "--data", data, *CURVATURE[:-4], "--max-samples", "16",
                  "--bits", "8,fp32", "--budget", "avg_bits=16", "--sensitivity", "trace", "-o", str(plan))
    assert planned.code == 0, planned.err
    recipe = yaml.safe_load(plan.read_text())
    assert recipe["model"]["task"] == "embedding" and "seq_len" not in recipe["data"]
    assert recipe["quantization"]["layers"] and all(name.startswith("encoder.") for name in
                                                    recipe["quantization"]["layers"])  # the embedder's layers
    validated = cli("validate", str(plan))
    assert validated.code == 0, validated.err
    applied = cli("apply", str(plan), "-o", str(tmp_path / "out"), "--batch-size", "16")
    assert applied.code == 0, applied.err
    from compress.checkpoint.load import load_model
    from compress.models.hf import SentenceEmbedder

    assert isinstance(load_model(str(tmp_path / "out")), SentenceEmbedder)  # reloads with the recorded task


@pytest.mark.slow
def test_a_per_channel_plan_exports_for_ort_as_it_is(cli, root: Path, tmp_path: Path) -> None:
    """No override: the plan's per-channel weight-only layers (3 or 4 bits on token inputs) apply and
    export for ONNX Runtime in the fold form (codes in the file, float weights at session start)."""
    from compress.export.onnx_qdq import float_at_runtime

    model, text = f"hf:{checkpoint(root, 'llama')}", ["--data", str(root / "text.txt"), "--seq-len", str(SEQ_LEN)]
    plan, out = tmp_path / "plan.yaml", tmp_path / "out"
    steps = [["plan", model, *text, *CURVATURE[:-4], "--max-samples", "32", "--batch-size", "16", "--bits", "3,4,fp32",
              "--act-bits", "fp32", "--budget", "avg_bits=6", "-o", str(plan)],
             ["apply", str(plan), "-o", str(out), "--batch-size", "16"],
             ["export", str(out), "--target", "ort", "-o", str(tmp_path / "onnx"), "--json", str(tmp_path / "x.json")]]
    for step in steps:
        result = cli(*step)
        assert result.code == 0, (step[0], result.err)
    quantized = {name for name, rule in yaml.safe_load(plan.read_text())["quantization"]["layers"].items() if rule}
    assert quantized and set(float_at_runtime(tmp_path / "onnx" / "model.onnx")) == quantized
    parity = json.loads((tmp_path / "x.json").read_text())["parity"]
    assert parity["max_error_steps"] <= 1.0, parity
