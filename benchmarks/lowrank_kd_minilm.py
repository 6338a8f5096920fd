"""builtin:minilm at 30% parameter reduction of the encoder's linear layers (ranks chosen by the
planner, ``lowrank_plan_minilm.py``), then recovered by knowledge distillation: mean cosine to the
FP32 embeddings against the number of KD steps, with and without feature distillation, side by side.

Each point of a curve is its own run of the toolkit's fine-tuning stage (``finetune_``) from the
same factorised model, for that many steps: embedding KD (1 − cosine to the FP32 model's sentence
embeddings), batches of 16, AdamW with a cosine-annealed rate from the variant's lr, no sharpness
tracking — so every point is a complete recipe ("distil for S steps"), not a snapshot of a longer
run. A variant (``--variants``, comma-separated ``KD_LAYERS:LR[:factors]``) adds feature
distillation (``finetune.kd_layers``, weight 1) at KD_LAYERS: ``none``, ``blocks`` (the outputs of the
6 transformer layers, token by token, padding left out) or ``factorised`` (the outputs of the
factorised layers); ``:factors`` trains only the factorised layers' two factors and bias (all else
frozen) instead of every weight.

Choosing settings: ``--validation`` trains on the first 192 of the 256 train sentences and scores on
the other 64 (the planner's calibration statistics still include them, so the starting cosine there
is higher than on held-out); the 64 held-out sentences are scored only without it.

Transfer set (``--transfer``): ``train``, the train sentences themselves; or ``mixed``, those plus
``MIXED`` spliced ones, each the words of one random train sentence up to a random cut followed by
the words of another from a random cut on (no held-out sentence is used).

Run: OMP_NUM_THREADS=1 python benchmarks/lowrank_kd_minilm.py [--steps 64,128,256]
[--variants none:2e-5,blocks:2e-5] [--validation] [--transfer train|mixed] [--json out.json]
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
STEPS = (64, 128, 256)
KD_BATCH = 16
MIXED = 2048
VALIDATION = 64
VARIANTS = ({"kd_layers": "none", "lr": 5e-5, "train": "all"}, {"kd_layers": "blocks", "lr": 5e-5, "train": "all"})


def mixed_transfer(sentences: int, count: int = MIXED, seed: int = 0) -> TokenData:
    """The first ``sentences`` of the train split plus ``count`` spliced from pairs of them (module
    docstring)."""
    from compress.models.minilm import tokenize

    texts = sentence_texts()
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    train = [texts[i].split() for i in order[:len(texts) - round(len(texts) * HELDOUT_FRACTION)]][:sentences]
    generator = torch.Generator().manual_seed(seed)

    def pick(upper: int) -> int:
        return int(torch.randint(upper, (1,), generator=generator))

    spliced = []
    for _ in range(count):
        first, second = train[pick(len(train))], train[pick(len(train))]
        spliced.append(" ".join(first[:1 + pick(len(first))] + second[pick(len(second)):]))
    return TokenData("sentences-mixed", tokenize([" ".join(words) for words in train] + spliced), None)


def kd_spec(steps: int, sentences: int, lr: float, kd_layers: str | tuple[str, ...]) -> FinetuneSpec:
    """Embedding KD (plus feature KD at ``kd_layers``) for exactly ``steps`` steps."""
    return FinetuneSpec(mode="kd", kd_loss="cosine", optimizer="adamw", lr=lr, batch_size=KD_BATCH,
                        epochs=math.ceil(steps * KD_BATCH / sentences), max_steps=steps, sharpness_every=0,
                        kd_layers=kd_layers)


def validation_split(train: TokenData) -> tuple[TokenData, TokenData]:
    """The train split less its last VALIDATION sentences (in the split's order), and those: the
    sentences settings are chosen on; the held-out 64 are never looked at for a choice."""
    keep = len(train) - VALIDATION
    return (train.subset(list(range(keep)), f"{train.name}[fit]"),
            train.subset(list(range(keep, len(train))), f"{train.name}[validation]"))


def train_factors_only_(model: torch.nn.Module, factorised: list[str]) -> None:
    """Freeze every parameter but the two factors (and bias) of each factorised layer."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for name in factorised:
        for parameter in model.get_submodule(name).parameters():
            parameter.requires_grad_(True)


def curve(found, compressed: torch.nn.Module, factorised: list[str], data, evaluation, steps: tuple[int, ...],
          variant: dict) -> list[dict]:
    """One fine-tuning run per step count (``variant``: kd_layers, lr, train), each scored on
    ``evaluation`` (mean cosine to the FP32 embeddings)."""
    layers = {"none": "none", "blocks": "blocks", "factorised": tuple(factorised)}[variant["kd_layers"]]
    points = []
    for count in steps:
        student = copy.deepcopy(compressed)
        if variant["train"] == "factors":
            train_factors_only_(student, factorised)
        result = finetune_(student, found.reference, data, kd_spec(count, len(data), variant["lr"], layers))
        cosine = evaluate(student, "minilm-lowrank-kd", evaluation, found.reference, batch_size=BATCH).value
        points.append({**variant, "steps": result.steps, "mean_cosine": cosine, "seconds": result.seconds,
                       "final_train_loss": result.losses[-1]})
        print(f"{variant}: {result.steps} steps: cosine {cosine:.4f}, loss {result.losses[-1]:.4f} "
              f"({result.seconds:.0f} s)", flush=True)
    return points


def run(steps: tuple[int, ...] = STEPS, variants: tuple[dict, ...] = VARIANTS, transfer: str = "train",
        validation: bool = False) -> dict:
    found = setup()
    fit, evaluation = validation_split(found.train) if validation else (found.train, found.heldout)
    data = fit if transfer == "train" else mixed_transfer(len(fit))
    compressed, plan, records = planned_model(found, REDUCTION)
    factorised = sorted(records)
    removed = sum(r.params_before - r.params_after for r in records.values())
    start = evaluate(compressed, "minilm-lowrank", evaluation, found.reference, batch_size=BATCH).value
    print(f"{REDUCTION:.0%} planned ranks: reduction {removed / found.linear:.3f}, cosine {start:.4f} "
          f"on {evaluation.name}", flush=True)
    curves = [curve(found, compressed, factorised, data, evaluation, steps, variant) for variant in variants]
    return {"model": "builtin:minilm", "target_reduction": REDUCTION, "reduction": removed / found.linear,
            "factorised_layers": len(records), "ranks": {n: r.rank for n, r in records.items()},
            "kd": {"loss": "1 - cosine (+ feature distillation at kd_layers)", "optimizer": "adamw",
                   "batch_size": KD_BATCH, "schedule": "cosine over each run's steps", "transfer": transfer,
                   "transfer_sentences": len(data)},
            "evaluated_on": evaluation.name, "evaluation_sentences": len(evaluation), "start_cosine": start,
            "torch_threads": torch.get_num_threads(), "curves": curves}


def parse_variant(text: str) -> dict:
    """``KD_LAYERS:LR[:factors]`` (KD_LAYERS: none, blocks or factorised)."""
    parts = text.split(":")
    return {"kd_layers": parts[0], "lr": float(parts[1]), "train": parts[2] if len(parts) > 2 else "all"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--variants", default=",".join(f"{v['kd_layers']}:{v['lr']:g}" for v in VARIANTS))
    parser.add_argument("--transfer", choices=("train", "mixed"), default="train")
    parser.add_argument("--validation", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report = run(tuple(int(s) for s in args.steps.split(",")), tuple(map(parse_variant, args.variants.split(","))),
                 args.transfer, args.validation)
    if args.json:
        write_json(Path(args.json), report)


if __name__ == "__main__":
    main()
