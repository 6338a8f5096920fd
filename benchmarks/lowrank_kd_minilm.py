"""builtin:minilm at 30% parameter reduction of the encoder's linear layers (ranks chosen by the
planner, ``lowrank_plan_minilm.py``), then recovered by knowledge distillation: mean cosine to the
FP32 embeddings against the number of KD steps, with and without feature distillation, side by side.

Each point of a curve is its own run of the toolkit's fine-tuning stage (``finetune_``) from the
same factorised model, for that many steps: embedding KD (1 − cosine to the FP32 model's sentence
embeddings), batches of 16, AdamW with a cosine-annealed rate from the variant's lr, no sharpness
tracking — so every point is a complete recipe ("distil for S steps"), not a snapshot of a longer
run. A variant (``--variants``, comma-separated ``KD_LAYERS:LR[:FLAG...]``) adds feature
distillation (``finetune.kd_layers``, weight 1) at KD_LAYERS: ``none``, ``blocks`` (the outputs of the
6 transformer layers, token by token, padding left out) or ``factorised`` (the outputs of the
factorised layers); flag ``factors`` trains only the factorised layers' two factors and bias (all else
frozen) instead of every weight; flag ``nodropout`` trains with dropout off (``finetune.dropout``).

The factorised start (``--start``): ``fp32``, the planner's factors from statistics of the FP32 model
(as apply did before); ``drift``, the same ranks factorised true-sequentially toward the float
model's outputs (``lowrank.input_drift``). ``--compare-starts`` only measures, without fine-tuning,
both starts at the planned ranks and at the uniform 30% (rank ratio 0.7 on every encoder linear), on
the validation and the held-out sentences, side by side. ``--ranks-from JSON`` takes the 30% ranks
from an earlier result of this script (its ``ranks``) instead of planning again (4 min).

Choosing settings: ``--validation`` trains on the first 192 of the 256 train sentences and scores on
the other 64 (the planner's calibration statistics still include them, so the starting cosine there
is higher than on held-out); the 64 held-out sentences are scored only without it.

Transfer set (``--transfer``): ``train``, the train sentences themselves; or ``mixed``, those plus
``MIXED`` spliced ones, each the words of one random train sentence up to a random cut followed by
the words of another from a random cut on (no held-out sentence is used).

Run: OMP_NUM_THREADS=1 python benchmarks/lowrank_kd_minilm.py [--steps 64,128,256]
[--variants none:2e-5,blocks:2e-5] [--validation] [--transfer train|mixed] [--start fp32|drift]
[--ranks-from JSON] [--compare-starts] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
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
from compress.lowrank.apply import apply_lowrank_
from compress.lowrank.settings import LowRankSettings
from compress.plan.make import plannable_layers
from compress.reconstruct.stats import collect_layer_stats

REDUCTION = 0.3
STEPS = (64, 128, 256)
KD_BATCH = 16
MIXED = 2048
VALIDATION = 64
VARIANTS = ({"kd_layers": "none", "lr": 5e-5, "train": "all", "dropout": True},
            {"kd_layers": "blocks", "lr": 5e-5, "train": "all", "dropout": True})
UNIFORM_RATIO = 1 - REDUCTION
ENCODER = "encoder.encoder.layer."
METHOD = "fisher_whitened"  # the planner's rank method (compress/plan/ranks.py)


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


def kd_spec(steps: int, sentences: int, lr: float, kd_layers: str | tuple[str, ...], dropout: bool) -> FinetuneSpec:
    """Embedding KD (plus feature KD at ``kd_layers``) for exactly ``steps`` steps."""
    return FinetuneSpec(mode="kd", kd_loss="cosine", optimizer="adamw", lr=lr, batch_size=KD_BATCH,
                        epochs=math.ceil(steps * KD_BATCH / sentences), max_steps=steps, sharpness_every=0,
                        kd_layers=kd_layers, dropout=dropout)


def factorised_model(found, ranks: dict[str, int] | None, input_drift: bool) -> tuple[torch.nn.Module, dict]:
    """A copy of the FP32 model with ``ranks`` (None: rank ratio UNIFORM_RATIO on every encoder
    linear) factorised by METHOD, from FP32 statistics or true-sequentially with input drift; the
    calibration data is the planner's (the 256 train sentences)."""
    names = list(ranks) if ranks is not None else [n for n in plannable_layers(found.model) if n.startswith(ENCODER)]
    settings = {n: LowRankSettings(rank=ranks[n] if ranks is not None else None,
                                   rank_ratio=None if ranks is not None else UNIFORM_RATIO,
                                   method=METHOD, input_drift=input_drift) for n in names}
    batches = [b.inputs for b in found.train.batches(BATCH)]
    stats = None if input_drift else collect_layer_stats(found.model, batches, names)
    fisher = {n: found.reconstruction.factorised.output_fisher(n) for n in names}
    compressed = copy.deepcopy(found.model)
    return compressed, apply_lowrank_(compressed, settings, stats, fisher, batches).layers


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
        result = finetune_(student, found.reference, data,
                           kd_spec(count, len(data), variant["lr"], layers, variant["dropout"]))
        cosine = evaluate(student, "minilm-lowrank-kd", evaluation, found.reference, batch_size=BATCH).value
        points.append({**variant, "steps": result.steps, "mean_cosine": cosine, "seconds": result.seconds,
                       "final_train_loss": result.losses[-1]})
        print(f"{variant}: {result.steps} steps: cosine {cosine:.4f}, loss {result.losses[-1]:.4f} "
              f"({result.seconds:.0f} s)", flush=True)
    return points


def start_ranks(found, ranks_from: Path | None) -> dict[str, int]:
    """The planner's ranks at REDUCTION, or those stored in an earlier result (``ranks``)."""
    if ranks_from is not None:
        return json.loads(ranks_from.read_text())["ranks"]
    _, _, records = planned_model(found, REDUCTION)
    return {n: r.rank for n, r in records.items()}


def compare_starts(found, ranks: dict[str, int]) -> list[dict]:
    """Without fine-tuning: planned and uniform ranks, FP32-statistics and drift-aware factors, each
    scored on the validation and the held-out sentences."""
    _, validation = validation_split(found.train)
    rows = []
    for label, chosen in (("planned", ranks), ("uniform", None)):
        for input_drift in (False, True):
            compressed, records = factorised_model(found, chosen, input_drift)
            removed = sum(r.params_before - r.params_after for r in records.values())
            row = {"ranks": label, "input_drift": input_drift, "reduction": removed / found.linear,
                   "output_error": sum(r.output_error for r in records.values())}
            for split, data in (("validation", validation), ("heldout", found.heldout)):
                row[split] = evaluate(compressed, "minilm-lowrank", data, found.reference, batch_size=BATCH).value
            print(row, flush=True)
            rows.append(row)
            del compressed
    return rows


def run(steps: tuple[int, ...] = STEPS, variants: tuple[dict, ...] = VARIANTS, transfer: str = "train",
        validation: bool = False, start: str = "fp32", ranks_from: Path | None = None) -> dict:
    found = setup()
    ranks = start_ranks(found, ranks_from)
    fit, evaluation = validation_split(found.train) if validation else (found.train, found.heldout)
    data = fit if transfer == "train" else mixed_transfer(len(fit))
    compressed, records = factorised_model(found, ranks, start == "drift")
    factorised = sorted(records)
    removed = sum(r.params_before - r.params_after for r in records.values())
    start_cosine = evaluate(compressed, "minilm-lowrank", evaluation, found.reference, batch_size=BATCH).value
    print(f"{REDUCTION:.0%} planned ranks ({start} factors): reduction {removed / found.linear:.3f}, "
          f"cosine {start_cosine:.4f} on {evaluation.name}", flush=True)
    curves = [curve(found, compressed, factorised, data, evaluation, steps, variant) for variant in variants]
    return {"model": "builtin:minilm", "target_reduction": REDUCTION, "reduction": removed / found.linear,
            "factorised_layers": len(records), "ranks": {n: r.rank for n, r in records.items()}, "start": start,
            "kd": {"loss": "1 - cosine (+ feature distillation at kd_layers)", "optimizer": "adamw",
                   "batch_size": KD_BATCH, "schedule": "cosine over each run's steps", "transfer": transfer,
                   "transfer_sentences": len(data)},
            "evaluated_on": evaluation.name, "evaluation_sentences": len(evaluation), "start_cosine": start_cosine,
            "torch_threads": torch.get_num_threads(), "curves": curves}


def parse_variant(text: str) -> dict:
    """``KD_LAYERS:LR[:FLAG...]`` (KD_LAYERS: none, blocks or factorised; flags: factors, nodropout)."""
    parts = text.split(":")
    flags = set(parts[2:])
    unknown = flags - {"factors", "nodropout"}
    if unknown:
        raise SystemExit(f"unknown variant flag {sorted(unknown)[0]!r} in {text!r} (allowed: factors, nodropout)")
    return {"kd_layers": parts[0], "lr": float(parts[1]), "train": "factors" if "factors" in flags else "all",
            "dropout": "nodropout" not in flags}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--variants", default=",".join(f"{v['kd_layers']}:{v['lr']:g}" for v in VARIANTS))
    parser.add_argument("--transfer", choices=("train", "mixed"), default="train")
    parser.add_argument("--validation", action="store_true")
    parser.add_argument("--start", choices=("fp32", "drift"), default="fp32")
    parser.add_argument("--ranks-from", type=Path, default=None)
    parser.add_argument("--compare-starts", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.compare_starts:
        found = setup()
        ranks = start_ranks(found, args.ranks_from)
        report = {"model": "builtin:minilm", "target_reduction": REDUCTION, "method": METHOD,
                  "uniform_rank_ratio": UNIFORM_RATIO, "planned_ranks": ranks, "starts": compare_starts(found, ranks)}
    else:
        report = run(tuple(int(s) for s in args.steps.split(",")), tuple(map(parse_variant, args.variants.split(","))),
                     args.transfer, args.validation, args.start, args.ranks_from)
    if args.json:
        write_json(Path(args.json), report)


if __name__ == "__main__":
    main()
