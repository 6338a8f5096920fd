"""A tiny causal LM trained here on the project's own text, then 4-bit weights: plans vs uniform
4 bits, ours vs ONNX Runtime's ``MatMulNBitsQuantizer``. Perplexity and mean per-token KL to the
FP32 model on held-out text.

Text: ``compress/data/sentences.txt``, ``README.md``, ``benchmarks/README.md`` and the module
docstrings of ``compress/``, one sample per non-blank line; every 10th line is held out. A
word-level tokenizer (``--vocab`` words, trained on the training lines) and a GPT-2 (2 layers,
width 64, 4 heads, 64 positions, head tied to the embeddings, dropout 0.1) trained from scratch
with AdamW on blocks of ``--seq-len`` tokens for at most ``--seconds`` with one thread, keeping the
weights of least validation loss (a tenth of the training blocks), then saved with
``save_pretrained``: the ``hf:`` folder every variant loads.

Variants (the transformer's 8 Linear layers, all Conv1D in the checkpoint; the tied head stays
float), PyTorch fake-quant unless marked ORT:
- uniform 4-bit per channel and in blocks of 32: round-to-nearest and GPTQ;
- plans under ``avg_bits=4`` over 2/3/4/8-bit per-channel options (GPTQ, as apply deploys), from one
  curvature measurement (at most 60 products, 60 s) over the 256 calibration blocks, trace-only and hybrid
  (measured single-layer ΔL) sensitivities;
- ORT (MatMulNBits, 4-bit blocks of 32): our GPTQ export vs ORT's quantizer on the float ONNX
  (its default symmetric RTN, and HQQ).
llm-compressor's GPTQ runs beside it in its own venv: `benchmarks/llmcompressor_peers.py`.

Run: python benchmarks/tiny_lm.py [--seconds 150] [--json benchmarks/results/tiny_lm.json]
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

import numpy as np
import torch

import compress as cx
from compress.curvature.trace import TraceSpec
from compress.jsonio import write_json
from compress.metrics.text import perplexity, token_kl, token_nll
from compress.pipeline.plan import PlanMeasurements, plan_spec

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = 256  # training blocks for GPTQ statistics, curvature and the planner's measurements
CURVATURE_PRODUCTS = 60


def project_lines() -> list[str]:
    """Non-blank lines of the project's own prose, in a fixed order."""
    texts = [(ROOT / name).read_text(encoding="utf-8") for name in
             ("compress/data/sentences.txt", "README.md", "benchmarks/README.md")]
    for path in sorted((ROOT / "compress").rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if docstring:
            texts.append(docstring)
    return [line.strip() for text in texts for line in text.splitlines() if len(line.split()) >= 3]


def save_tokenizer(lines: list[str], vocab: int, folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(lines, trainers.WordLevelTrainer(vocab_size=vocab,
                                                                  special_tokens=["[UNK]", "[PAD]", "<eos>"]))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                            eos_token="<eos>").save_pretrained(folder)


def train_model(folder: Path, train_path: Path, vocab: int, seq_len: int, seconds: float) -> dict:
    """A GPT-2 trained from scratch on the training text (dropout 0.1, AdamW) for at most
    ``seconds``, keeping the weights with the least loss on a validation tenth of the training
    blocks (checked every 100 steps; early stopping); saved into ``folder``."""
    import transformers as tf

    from compress.curvature.losses import cross_entropy
    from compress.data.text import load_text

    torch.manual_seed(0)
    config = tf.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=64, n_layer=2, n_head=4, eos_token_id=2,
                           bos_token_id=2, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    model = tf.GPT2LMHeadModel(config)
    model.save_pretrained(folder)  # config and weights first, so that load_text finds a checkpoint
    blocks = load_text(train_path, folder, "causal-lm", seq_len)
    cut = len(blocks) - len(blocks) // 10
    data, validation = blocks.subset(range(cut), "train"), blocks.subset(range(cut, len(blocks)), "validation")

    def validation_loss() -> float:
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=validation.inputs[0], attention_mask=validation.inputs[1]).logits
            value = float(cross_entropy(logits, validation.targets))
        model.train()
        return value

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    began, steps, losses, best = time.perf_counter(), 0, [], (validation_loss(), 0)
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    while time.perf_counter() - began < seconds and steps - best[1] < 500:
        index = torch.randint(len(data), (16,), generator=generator)
        logits = model(input_ids=data.inputs[0][index], attention_mask=data.inputs[1][index]).logits
        loss = cross_entropy(logits, data.targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps, losses = steps + 1, losses + [float(loss.detach())]
        if steps % 100 == 0 and (value := validation_loss()) < best[0]:
            best, best_state = (value, steps), {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval().save_pretrained(folder)
    return {"steps": steps, "best_step": best[1], "validation_loss": best[0], "blocks": len(data),
            "seconds": round(time.perf_counter() - began, 1), "parameters": sum(p.numel() for p in model.parameters()),
            "final_train_loss": float(np.mean(losses[-20:]))}


def recipe(model: str, rule: dict) -> object:
    from compress.recipe.schema import parse_recipe

    return parse_recipe({"version": 1, "model": {"spec": model}, "data": {"calibration": "train"},
                         "quantization": {"layers": {"default": rule}}}, "benchmark")


def scores(result) -> dict:
    return {"perplexity": round(result.value, 4), "kl": result.mean_token_kl, "size_mb": round(result.size_mb, 4)}


def torch_variants(spec: str, train, heldout) -> tuple[dict, dict]:
    """Uniform 4-bit (per channel / blocks of 32, RTN / GPTQ) and avg_bits=4 plans, fake-quant."""
    results = {}
    for grid, block in (("per channel", None), ("blocks of 32", 32)):
        for method in ("rtn", "gptq"):
            rule = {"weight_bits": 4, "act_bits": None, "method": method, "weight_block": block}
            began = time.perf_counter()
            applied = cx.apply_plan_(spec, recipe(spec, rule), train, eval_data=heldout,
                                     calibration_samples=CALIBRATION)
            results[f"uniform 4-bit {grid}, {method}"] = {**scores(applied.after),
                                                          "seconds": round(time.perf_counter() - began, 1)}
            print(f"uniform 4-bit {grid}, {method}", results[f"uniform 4-bit {grid}, {method}"], flush=True)
    fp32 = scores(applied.before)
    began = time.perf_counter()
    calibration = train.subset(range(CALIBRATION), "calibration")
    curvature = cx.estimate_curvature(spec, calibration, cx.CurvatureSpec(
        batch_size=32, trace=TraceSpec(max_products=CURVATURE_PRODUCTS, max_seconds=60)))
    curvature_seconds = round(time.perf_counter() - began, 1)
    for sensitivity in ("trace", "hybrid"):
        began = time.perf_counter()
        model = cx.load_model(spec)
        how = PlanMeasurements(sensitivity)
        plan = cx.make_plan(model, calibration, spec=plan_spec({"avg_bits": 4}, how, bits=(2, 3, 4, 8)),
                            curvature=curvature, measurements=how, max_samples=None)
        applied = cx.apply_plan_(model, plan, train, eval_data=heldout, calibration_samples=CALIBRATION)
        name = f"plan avg_bits=4 ({sensitivity})"
        results[name] = {**scores(applied.after), "predicted_delta_loss": plan.predicted_delta_loss,
                         "choices": {layer: chosen.option().label() for layer, chosen in plan.layers.items()},
                         "seconds": round(time.perf_counter() - began, 1), "curvature_seconds": curvature_seconds,
                         "curvature_products": curvature.num_hvps}
        print(name, results[name], flush=True)
    return fp32, results


def ort_scores(onnx_bytes: bytes, heldout, reference: list[torch.Tensor]) -> dict:
    """Perplexity and mean per-token KL to the FP32 PyTorch logits of an ONNX model run by ORT."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    nll = kl = 0.0
    targets = positions = 0
    for batch, expected in zip(heldout.batches(64), reference):
        logits = torch.from_numpy(session.run(None, dict(zip(names, (x.numpy() for x in batch.inputs))))[0])
        value, count = token_nll(logits, batch.targets)
        nll, targets = nll + value, targets + count
        value, count = token_kl(logits, expected, batch.inputs[1])
        kl, positions = kl + value, positions + count
    return {"perplexity": round(perplexity(nll, targets), 4), "kl": kl / positions}


def float_lm_onnx(model: torch.nn.Module, example: tuple) -> tuple[bytes, list[str]]:
    """The float model as ONNX (``reconstruct_peers.float_token_model_onnx``) and the names of the
    MatMul nodes of the tied head (its folded copy of the embedding matrix), which are left float as
    ours are."""
    import onnx

    from reconstruct_peers import float_token_model_onnx

    proto = float_token_model_onnx(model, example, output="logits")
    graph = onnx.load_from_string(proto).graph
    head = [node.name for node in graph.node if node.op_type == "MatMul" and "logits" in node.output]
    return proto, head


def ort_variants(spec: str, train, heldout, out: Path) -> dict:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig, HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer)

    model = cx.load_model(spec)
    with torch.no_grad():
        reference = [model(*b.inputs) for b in heldout.batches(64)]
    float_bytes, head = float_lm_onnx(model, next(iter(heldout.batches(2))).inputs)
    results = {"ORT fp32": ort_scores(float_bytes, heldout, reference)}
    configs = {"ORT quantizer, default (RTN, symmetric)": dict(
                   block_size=32, is_symmetric=True, algo_config=DefaultWeightOnlyQuantConfig(32, True)),
               "ORT quantizer, HQQ": dict(block_size=32, algo_config=HQQWeightOnlyQuantConfig(block_size=32, bits=4))}
    for name, kwargs in configs.items():
        began = time.perf_counter()
        try:
            quantizer = MatMulNBitsQuantizer(onnx.load_from_string(float_bytes), bits=4, nodes_to_exclude=head,
                                             **kwargs)
            quantizer.process()
            quantized = quantizer.model.model if hasattr(quantizer.model, "model") else quantizer.model
            count = sum(n.op_type == "MatMulNBits" for n in quantized.graph.node)
            results[name] = {**ort_scores(quantized.SerializeToString(), heldout, reference), "matmul_nbits": count,
                             "float_head": head,
                             "seconds": round(time.perf_counter() - began, 1)}
        except Exception as exc:  # noqa: BLE001 - a peer's failure is a result, recorded in one line
            results[name] = {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        print(name, results[name], flush=True)
    began = time.perf_counter()
    rule = {"weight_bits": 4, "act_bits": None, "method": "gptq", "weight_block": 32}
    cx.apply_plan_(model, recipe(spec, rule), train, eval_data=heldout, calibration_samples=CALIBRATION)
    artifact = cx.export_model(model, out / "ours", heldout, target="ort", force=True)
    results["ours, GPTQ blocks of 32 (MatMulNBits)"] = {
        **ort_scores(artifact.onnx.read_bytes(), heldout, reference), "fused": artifact.fusion.fused,
        "seconds": round(time.perf_counter() - began, 1)}
    print("ours", results["ours, GPTQ blocks of 32 (MatMulNBits)"], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150, help="training time (default 150)")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--out", default="/tmp/compress-tiny-lm", help="work folder (model, text, ONNX files)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = project_lines()
    train_lines = [line for i, line in enumerate(lines) if i % 10]
    heldout_lines = [line for i, line in enumerate(lines) if not i % 10]
    (out / "train.txt").write_text("\n".join(train_lines), encoding="utf-8")
    (out / "heldout.txt").write_text("\n".join(heldout_lines), encoding="utf-8")
    folder = out / "model"
    save_tokenizer(train_lines, args.vocab, folder)
    training = train_model(folder, out / "train.txt", args.vocab, args.seq_len, args.seconds)
    print("trained", training, flush=True)
    spec = f"hf:{folder}"
    model = cx.load_model(spec)
    train = cx.as_data(str(out / "train.txt"), model=model, seq_len=args.seq_len)
    heldout = cx.as_data(str(out / "heldout.txt"), model=model, seq_len=args.seq_len)
    fp32, variants = torch_variants(spec, train, heldout)
    results = {"text": {"train_lines": len(train_lines), "heldout_lines": len(heldout_lines),
                        "heldout_blocks": len(heldout), "seq_len": args.seq_len, "vocab": args.vocab},
               "training": training, "fp32": fp32, "pytorch": variants,
               "ort": ort_variants(spec, train, heldout, out)}
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
