"""builtin:minilm at 30% parameter reduction of the encoder's linear layers (ranks chosen by the
planner, ``lowrank_plan_minilm.py``), then recovered by knowledge distillation: mean cosine to the
FP32 embeddings on the 64 held-out sentences against the number of KD steps.

Each point of the curve is its own run of the toolkit's fine-tuning stage (``finetune_``) from the
same factorised model, for that many steps: embedding KD (1 − cosine to the FP32 model's sentence
embeddings) on the 256 train sentences, batches of 16, AdamW with a cosine-annealed rate from
``--lr`` (5e-5, the MiniLM 4-bit recipe's), no sharpness tracking — so every point is a complete
recipe ("distil for S steps"), not a snapshot of a longer run. Factorised layers are two ordinary
Linears, so both factors train.

Transfer set (``--transfer``): ``train``, the 256 train sentences themselves; or ``mixed``, those
256 plus ``MIXED`` spliced ones, each the words of one random train sentence up to a random cut
followed by the words of another from a random cut on (no held-out sentence is used; distillation
needs inputs only, and 256 sentences are few for the error a 30% factorisation leaves).

Run: OMP_NUM_THREADS=1 python benchmarks/lowrank_kd_minilm.py [--steps 32,64,128,256] [--lr 5e-5]
[--transfer train|mixed] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import torch
from lowrank_plan_minilm import BATCH, planned_model, setup  # this folder, run as a script

from compress.data.builtin import sentence_texts
from compress.data.source import HELDOUT_FRACTION, SPLIT_SEED, TokenData
from compress.evaluation import evaluate
from compress.finetune.spec import FinetuneSpec
from compress.finetune.train import finetune_
from compress.jsonio import write_json

REDUCTION = 0.3
STEPS = (32, 64, 128, 256)
KD_BATCH = 16
MIXED = 2048


def mixed_transfer(count: int = MIXED, seed: int = 0) -> TokenData:
    """The train split's sentences plus ``count`` spliced from pairs of them (module docstring)."""
    from compress.models.minilm import tokenize

    texts = sentence_texts()
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    train = [texts[i].split() for i in order[:len(texts) - round(len(texts) * HELDOUT_FRACTION)]]
    generator = torch.Generator().manual_seed(seed)

    def pick(upper: int) -> int:
        return int(torch.randint(upper, (1,), generator=generator))

    spliced = []
    for _ in range(count):
        first, second = train[pick(len(train))], train[pick(len(train))]
        spliced.append(" ".join(first[:1 + pick(len(first))] + second[pick(len(second)):]))
    return TokenData("sentences-mixed", tokenize([" ".join(words) for words in train] + spliced), None)


def kd_spec(steps: int, sentences: int, lr: float) -> FinetuneSpec:
    """Embedding KD for exactly ``steps`` steps (enough epochs to hold them)."""
    return FinetuneSpec(mode="kd", kd_loss="cosine", optimizer="adamw", lr=lr, batch_size=KD_BATCH,
                        epochs=math.ceil(steps * KD_BATCH / sentences), max_steps=steps, sharpness_every=0)


def run(steps: tuple[int, ...] = STEPS, lr: float = 5e-5, transfer: str = "train") -> dict:
    found = setup()
    data = found.train if transfer == "train" else mixed_transfer()
    compressed, plan, records = planned_model(found, REDUCTION)
    removed = sum(r.params_before - r.params_after for r in records.values())
    start = evaluate(compressed, "minilm-lowrank", found.heldout, found.reference, batch_size=BATCH).value
    print(f"{REDUCTION:.0%} planned ranks: reduction {removed / found.linear:.3f}, cosine {start:.4f}", flush=True)
    curve = [{"steps": 0, "mean_cosine": start, "seconds": 0.0}]
    for count in steps:
        student = copy.deepcopy(compressed)
        result = finetune_(student, found.reference, data, kd_spec(count, len(data), lr))
        cosine = evaluate(student, "minilm-lowrank-kd", found.heldout, found.reference, batch_size=BATCH).value
        curve.append({"steps": result.steps, "mean_cosine": cosine, "seconds": result.seconds,
                      "final_train_loss": result.losses[-1]})
        print(f"{result.steps} KD steps: cosine {cosine:.4f} ({result.seconds:.0f} s)", flush=True)
    return {"model": "builtin:minilm", "target_reduction": REDUCTION, "reduction": removed / found.linear,
            "factorised_layers": len(records), "ranks": {n: r.rank for n, r in records.items()},
            "kd": {"loss": "1 - cosine", "optimizer": "adamw", "lr": lr, "batch_size": KD_BATCH,
                   "schedule": "cosine over each run's steps", "transfer": transfer, "transfer_sentences": len(data)},
            "torch_threads": torch.get_num_threads(), "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--transfer", choices=("train", "mixed"), default="train")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report = run(tuple(int(s) for s in args.steps.split(",")), args.lr, args.transfer)
    if args.json:
        write_json(Path(args.json), report)


if __name__ == "__main__":
    main()
