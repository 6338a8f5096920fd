"""llm-compressor's GPTQ side by side with ours, weights only, no fine-tuning, at equal bits and grid.

Runs in OUR env; the peer runs in its own venv (``--peer-python``) through
``benchmarks/peers/llmcompressor_gptq.py``, which saves a float checkpoint of its fake-quantized
weights that is measured here with our metrics:
- builtin:minilm (its packaged folder; the 36 encoder linears, pooler left float): 4-bit symmetric
  weights per channel and in blocks of 32 and 128, calibrated on the 256 training sentences (text
  lines, tokenised as ours are); mean cosine of the sentence embeddings to the float model on the
  64 held-out sentences (``reconstruct.cosine``); ours (``reconstruct.reconstructed_``, the default
  GPTQ) re-run side by side.
- the tiny causal LM of ``benchmarks/tiny_lm.py`` (its saved ``--tiny-lm`` folder; the 8
  transformer linears, tied head float): 4-bit per channel and in blocks of 32, calibrated on the
  same first 256 training blocks of 32 tokens ours uses (passed as token ids); perplexity and mean
  per-token KL to FP32 on the held-out text; ours (uniform GPTQ, as tiny_lm.py runs it) re-run side
  by side. The peer also runs once as shipped on GPT-2's ``Conv1D`` layers (no swap to Linear).
Each peer grid runs with llm-compressor's default weight observer (min-max scales) and with its
``mse`` observer (a clip search, as our GPTQ's MSE clip).
A peer run that fails is recorded as its one-line error.

The peer's venv (measured with llmcompressor 0.14.0.1; the local CPU wheel of torch keeps it small):
     python3 -m venv /tmp/r-peers-venv && /tmp/r-peers-venv/bin/pip install
     /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl llmcompressor==0.14.0.1

Run: python benchmarks/llmcompressor_peers.py --peer-python /tmp/r-peers-venv/bin/python
     [--part minilm|tiny-lm|all] [--tiny-lm /tmp/compress-tiny-lm] [--work /tmp/llmcompressor-peers]
     [--json benchmarks/results/llmcompressor_peers.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reconstruct import cosine, reconstructed_  # noqa: E402
from reconstruct_peers import one_line  # noqa: E402
from tiny_lm import CALIBRATION, recipe, scores  # noqa: E402

import compress as cx  # noqa: E402
from compress.data.builtin import sentence_texts  # noqa: E402
from compress.data.source import TensorData  # noqa: E402
from compress.data.spec import load_data  # noqa: E402
from compress.jsonio import write_json  # noqa: E402
from compress.models.hf import build_hf_model  # noqa: E402
from compress.models.minilm import model_dir  # noqa: E402
from compress.plan.make import plannable_layers  # noqa: E402
from compress.reconstruct.layer import ReconstructSettings  # noqa: E402

PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "llmcompressor_gptq.py"
MINILM_GRIDS = {"per channel": 0, "blocks of 32": 32, "blocks of 128": 128}
TINY_LM_GRIDS = {"per channel": 0, "blocks of 32": 32}
OBSERVERS = {"llmcompressor_gptq": None, "llmcompressor_gptq_mse": "mse"}


def run_peer(python: str, model: Path, calibration: Path, out: Path, group_size: int, ignore: list[str],
             extra: tuple[str, ...] = ()) -> dict:
    """The peer script in its venv; its run record, or ``{"failed": one line}``."""
    command = [python, str(PEER_SCRIPT), "--model", str(model), "--calibration", str(calibration), "--out", str(out),
               "--bits", "4", "--group-size", str(group_size), *extra, "--ignore", *ignore]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return {"failed": (lines[-1] if lines else f"exit {done.returncode}")[:300]}
    record = json.loads((out / "llmcompressor_run.json").read_text())
    return {**record, "wall_seconds": round(time.perf_counter() - began, 1)}


def observer_flag(observer: str | None) -> tuple[str, ...]:
    return () if observer is None else ("--observer", observer)


def summary(record: dict, **metrics) -> dict:
    """The metrics first, then the peer's run record (its module names counted)."""
    return {**metrics, **{k: v for k, v in record.items() if k != "quantized_modules"},
            "quantized": len(record["quantized_modules"])}


def minilm_train_sentences() -> list[str]:
    """The texts of builtin:sentences' training split, in the split's order (the split is taken
    over an index tensor, so it is the same permutation ``load_data`` applies)."""
    texts = sentence_texts()
    indices = TensorData("index", (torch.arange(len(texts)),), None).split("train").inputs[0]
    return [texts[i] for i in indices.tolist()]


def minilm_part(python: str, work: Path) -> dict:
    folder = work / "minilm-float"
    if not folder.exists():
        shutil.copytree(model_dir(), folder)
    calibration = work / "minilm-calibration.txt"
    calibration.write_text("\n".join(minilm_train_sentences()) + "\n", encoding="utf-8")
    reference = cx.load_model("builtin:minilm").eval()
    heldout = load_data("builtin:sentences", "heldout", "heldout")
    inputs = [b.inputs for b in load_data("builtin:sentences", "train", "train").batches(32)]
    names = [n for n in plannable_layers(reference) if ".encoder.layer." in n]
    results = {"calibration_sentences": len(minilm_train_sentences()), "heldout_sentences": len(heldout)}
    for label, group in MINILM_GRIDS.items():
        settings = {n: ReconstructSettings(bits=4, weight_block=group or None) for n in names}
        ours, info = reconstructed_(copy.deepcopy(reference), settings, inputs)
        row = {"ours_gptq": {"cosine": cosine(ours, reference, heldout), "seconds": info["seconds"]}}
        del ours
        for name, observer in OBSERVERS.items():
            out = work / f"minilm-gptq-{group or 'channel'}-{observer or 'default'}"
            peer = run_peer(python, folder, calibration, out, group, ["re:.*pooler.*"], observer_flag(observer))
            if "failed" not in peer:
                peer = summary(peer, cosine=cosine(build_hf_model(out, "embedding").eval(), reference, heldout))
            row[name] = peer
        results[label] = row
        print("minilm", label, row, flush=True)
    return results


def tiny_lm_part(python: str, work: Path, tiny: Path) -> dict:
    folder = tiny / "model"
    spec = f"hf:{folder}"
    reference = cx.load_model(spec).eval()
    train = cx.as_data(str(tiny / "train.txt"), model=reference, seq_len=32)
    heldout = cx.as_data(str(tiny / "heldout.txt"), model=reference, seq_len=32)
    input_ids, attention_mask = train.subset(range(CALIBRATION), "calibration").inputs
    calibration = work / "tiny-lm-calibration.jsonl"
    calibration.write_text("".join(json.dumps({"input_ids": ids, "attention_mask": mask}) + "\n"
                                   for ids, mask in zip(input_ids.tolist(), attention_mask.tolist())))
    fp32 = cx.evaluate(reference, heldout, reference=reference)
    results = {"fp32": {"perplexity": round(fp32.value, 4), "kl": fp32.mean_token_kl},
               "calibration_blocks": CALIBRATION, "heldout_blocks": len(heldout)}
    for label, group in TINY_LM_GRIDS.items():
        began = time.perf_counter()
        rule = {"weight_bits": 4, "act_bits": None, "method": "gptq", "weight_block": group or None}
        ours = cx.apply_plan_(spec, recipe(spec, rule), train, eval_data=heldout, calibration_samples=CALIBRATION)
        row = {"ours_gptq": {**scores(ours.after), "seconds": round(time.perf_counter() - began, 1)}}
        for name, observer in OBSERVERS.items():
            out = work / f"tiny-lm-gptq-{group or 'channel'}-{observer or 'default'}"
            peer = run_peer(python, folder, calibration, out, group, ["lm_head"], observer_flag(observer))
            if "failed" not in peer:
                measured = cx.evaluate(cx.load_model(f"hf:{out}").eval(), heldout, reference=reference)
                peer = summary(peer, perplexity=round(measured.value, 4), kl=measured.mean_token_kl)
            row[name] = peer
        results[label] = row
        print("tiny-lm", label, row, flush=True)
    results["as shipped, Conv1D kept"] = run_peer(python, folder, calibration, work / "tiny-lm-conv1d-kept", 32,
                                                  ["lm_head"], ("--keep-conv1d",))
    print("tiny-lm as shipped", results["as shipped, Conv1D kept"], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", required=True, help="python of the venv that has llmcompressor")
    parser.add_argument("--part", choices=("minilm", "tiny-lm", "all"), default="all")
    parser.add_argument("--tiny-lm", default="/tmp/compress-tiny-lm", type=Path,
                        help="tiny_lm.py's --out folder (model/, train.txt, heldout.txt)")
    parser.add_argument("--work", default="/tmp/llmcompressor-peers", type=Path)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    parts = {"minilm": lambda: minilm_part(args.peer_python, args.work),
             "tiny-lm": lambda: tiny_lm_part(args.peer_python, args.work, args.tiny_lm)}
    report = {"threads": 1}
    for name, run in parts.items():
        if args.part in (name, "all"):
            try:
                report[name] = run()
            except Exception as exc:  # noqa: BLE001 - a part that cannot run is a result, in one line
                report[name] = {"failed": one_line(exc)}
            if args.json:
                write_json(args.json, report)


if __name__ == "__main__":
    main()
