"""Recovery by `compress apply` (issue 5's accuracy goals), each through the real pipeline.

1. builtin:mnist-cnn: the plan at average 3 weight bits (`compress plan --budget avg_bits=3`,
   weights-only candidates {2,3,4,8,fp32}) plus 50% unstructured magnitude sparsity on every layer,
   recovered by QAT+KD for 2 epochs (lr from the sharpness). Goal: within 0.5 points of FP32.
2. builtin:minilm: 4-bit weights (blocks of 32) on every encoder linear layer
   (recipes/minilm-w4-weight-only.yaml), recovered by embedding KD (1 − cosine). Goal: mean cosine
   to FP32 embeddings ≥ 0.98 on the 64 held-out sentences.

Run: python benchmarks/apply_recovery.py [--json benchmarks/results/apply_recovery.json] [--skip-minilm]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from compress.cli.main import main
from compress.jsonio import write_json

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> None:
    if main(list(args)) != 0:
        raise SystemExit(f"compress {' '.join(args)} failed")


def applied(recipe: Path, work: Path, name: str) -> dict:
    start = time.perf_counter()
    run("apply", str(recipe), "-o", str(work / name), "--json", str(work / f"{name}.json"))
    info = json.loads((work / f"{name}.json").read_text())
    evaluation = info["evaluation"]
    return {"before": evaluation["before"]["value"], "after": evaluation["after"]["value"],
            "metric": evaluation["after"]["metric"], "size_mb": evaluation["after"]["size_mb"],
            "fp32_size_mb": evaluation["before"]["size_mb"], "seconds": time.perf_counter() - start,
            "finetune": {k: info["finetune"][k] for k in ("steps", "lr", "lr_source", "initial_sharpness",
                                                          "seconds", "sharpness_seconds")}}


def mnist(work: Path) -> dict:
    run("plan", "builtin:mnist-cnn", "--data", "builtin:mnist5k", "--max-samples", "1024", "--budget", "avg_bits=3",
        "-o", str(work / "plan.yaml"))
    recipe = yaml.safe_load((work / "plan.yaml").read_text())
    recipe["pruning"] = {"layers": {"default": {"ratio": 0.5}}}
    recipe["finetune"] = {"mode": "qat+kd", "epochs": 2, "lr": "auto", "sharpness_every": 0}
    (work / "mnist.yaml").write_text(yaml.safe_dump(recipe))
    bits = {n: r["weight_bits"] for n, r in recipe["quantization"]["layers"].items() if r}
    return {"plan_bits": bits, **applied(work / "mnist.yaml", work, "mnist")}


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        report = {"mnist_cnn_3bit_50pct": mnist(work)}
        if not args.skip_minilm:
            report["minilm_w4"] = applied(ROOT / "recipes" / "minilm-w4-weight-only.yaml", work, "minilm")
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main_()
