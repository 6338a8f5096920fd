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
frozen) instead of every weight; flag ``nodropout`` trains with dropout off (``finetune.dropout``);
flag ``localN`` first trains each of the 6 blocks alone for N steps on the teacher's input to it
(``finetune.local_steps``, needs KD_LAYERS blocks).

The factorised start (``--start``): ``fp32``, the planner's factors from statistics of the FP32 model
(as apply did before); ``drift``, the same ranks factorised true-sequentially toward the float
model's outputs (``lowrank.input_drift``), ``drift@R`` with the fixed relative ridge R
(``lowrank.drift_ridge``) instead of the GCV choice. ``--compare-starts`` only measures, without fine-tuning,
both starts at the planned ranks and at the uniform 30% (rank ratio 0.7 on every encoder linear), on
the validation and the held-out sentences, side by side. ``--ranks-from JSON`` takes the 30% ranks
from an earlier result of this script (its ``ranks``) instead of planning again (4 min).

Choosing settings: ``--validation`` trains on the first 192 of the 256 train sentences and scores on
the other 64 (the planner's calibration statistics still include them, so the starting cosine there
is higher than on held-out); the 64 held-out sentences are scored only without it.

Transfer set (``--transfer``, or a variant flag of the same name): ``train``, the train sentences
themselves; ``mixed``, those plus ``MIXED`` spliced ones, each the words of one random train
sentence up to a random cut followed by the words of another from a random cut on; ``pydoc``, those
plus ``PYDOC`` passages of ``PYDOC_WORDS`` words from the English text Python itself ships
(``pydoc_data.topics``, the help topics of the standard library: unlabelled text on this machine,
nothing downloaded; another domain than the sentences); ``replace``, those plus ``REPLACED`` copies
of random train sentences in which each token but the first and last is replaced, with probability
``REPLACE_RATE``, by a whole-word token drawn uniformly from the tokenizer's vocabulary (TinyBERT's
augmentation without its MLM proposals: new words in the sentences' own frames, since 28% of the
held-out tokens never occur in the train sentences). No held-out sentence is used.

Run: OMP_NUM_THREADS=1 python benchmarks/lowrank_kd_minilm.py [--steps 64,128,256]
[--variants none:2e-5,blocks:2e-5] [--validation] [--transfer train|mixed|pydoc|replace] [--start fp32|drift]
[--ranks-from JSON] [--compare-starts [planned,uniform]] [--threads 1] [--json out.json]
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
from compress.lowrank.fisher import output_fisher_diag
from compress.lowrank.settings import LowRankSettings
from compress.plan.make import plannable_layers
from compress.reconstruct.stats import collect_layer_stats

REDUCTION = 0.3
STEPS = (64, 128, 256)
KD_BATCH = 16
MIXED = 2048
PYDOC = 4096
PYDOC_WORDS = 16
REPLACED = 8192
REPLACE_RATE = 0.15
TRANSFERS = ("train", "mixed", "pydoc", "replace")
VALIDATION = 64
VARIANTS = ({"kd_layers": "none", "lr": 5e-5, "train": "all", "dropout": True, "transfer": "train", "local_steps": 0},
            {"kd_layers": "blocks", "lr": 5e-5, "train": "all", "dropout": True, "transfer": "train", "local_steps": 0})
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


def pydoc_transfer(sentences: TokenData, count: int = PYDOC, seed: int = 0) -> TokenData:
    """``sentences`` (tokenised train sentences) plus ``count`` passages of PYDOC_WORDS consecutive
    words drawn at random from the standard library's help topics (module docstring)."""
    import pydoc_data.topics

    from compress.models.minilm import tokenize

    words = " ".join(pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)).split()
    starts = torch.randint(len(words) - PYDOC_WORDS, (count,), generator=torch.Generator().manual_seed(seed))
    passages = tokenize([" ".join(words[i:i + PYDOC_WORDS]) for i in starts.tolist()])
    ids, mask = sentences.inputs
    width = max(ids.shape[1], passages[0].shape[1])

    def padded(tensor: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]))

    return TokenData("sentences+pydoc", (torch.cat([padded(ids), padded(passages[0])]),
                                          torch.cat([padded(mask), padded(passages[1])])), None)


def whole_word_ids() -> torch.Tensor:
    """The ids of the tokenizer's whole-word ASCII tokens (no special, unused or ``##`` pieces)."""
    from compress.models.minilm import load_tokenizer, model_dir

    tokenizer = load_tokenizer(model_dir())
    special = set(tokenizer.all_special_ids)
    return torch.tensor(sorted(i for token, i in tokenizer.get_vocab().items()
                               if i not in special and token.isascii() and token.isalpha()))


def replaced_transfer(sentences: TokenData, count: int = REPLACED, seed: int = 0) -> TokenData:
    """``sentences`` plus ``count`` copies of random ones with inner tokens replaced (module docstring)."""
    ids, mask = sentences.inputs
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randint(len(ids), (count,), generator=generator)
    copies, copy_mask = ids[picked].clone(), mask[picked]
    position = torch.arange(ids.shape[1])[None]
    inner = (position >= 1) & (position < copy_mask.sum(dim=1, keepdim=True) - 1)
    chosen = inner & (torch.rand(copies.shape, generator=generator) < REPLACE_RATE)
    vocabulary = whole_word_ids()
    copies[chosen] = vocabulary[torch.randint(len(vocabulary), (int(chosen.sum()),), generator=generator)]
    return TokenData("sentences+replaced", (torch.cat([ids, copies]), torch.cat([mask, copy_mask])), None)


def transfer_data(fit: TokenData, transfer: str) -> TokenData:
    """The fine-tuning data for ``transfer`` (module docstring) around the ``fit`` sentences."""
    if transfer == "replace":
        return replaced_transfer(fit)
    if transfer == "mixed":
        return mixed_transfer(len(fit))
    return pydoc_transfer(fit) if transfer == "pydoc" else fit


def kd_spec(steps: int, sentences: int, lr: float, kd_layers: str | tuple[str, ...], dropout: bool,
            local_steps: int = 0) -> FinetuneSpec:
    """Embedding KD (plus feature KD at ``kd_layers``) for exactly ``steps`` steps, after
    ``local_steps`` block-local steps per kd_layers module."""
    return FinetuneSpec(mode="kd", kd_loss="cosine", optimizer="adamw", lr=lr, batch_size=KD_BATCH,
                        epochs=math.ceil(steps * KD_BATCH / sentences), max_steps=steps, sharpness_every=0,
                        kd_layers=kd_layers, dropout=dropout, local_steps=local_steps)


def factorised_model(found, ranks: dict[str, int] | None, start: str,
                     calibration: TokenData) -> tuple[torch.nn.Module, dict]:
    """A copy of the FP32 model with ``ranks`` (None: rank ratio UNIFORM_RATIO on every encoder
    linear) factorised by METHOD, from FP32 statistics or true-sequentially with input drift; the
    statistics and the output Fisher diagonal from ``calibration``. ``start``: ``fp32``, ``drift``
    (GCV ridge) or ``drift@R`` (fixed relative ridge R)."""
    input_drift = start.startswith("drift")
    ridge = float(start.split("@")[1]) if "@" in start else None
    names = list(ranks) if ranks is not None else [n for n in plannable_layers(found.model) if n.startswith(ENCODER)]
    settings = {n: LowRankSettings(rank=ranks[n] if ranks is not None else None,
                                   rank_ratio=None if ranks is not None else UNIFORM_RATIO,
                                   method=METHOD, input_drift=input_drift, drift_ridge=ridge) for n in names}
    batches = [b.inputs for b in calibration.batches(BATCH)]
    stats = None if input_drift else collect_layer_stats(found.model, batches, names)
    fisher = output_fisher_diag(found.model, batches, names)
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


def curve(found, compressed: torch.nn.Module, factorised: list[str], fit, evaluation, steps: tuple[int, ...],
          variant: dict) -> list[dict]:
    """One fine-tuning run per step count (``variant``: kd_layers, lr, train, dropout, transfer),
    each on the variant's transfer set around the ``fit`` sentences, scored on ``evaluation`` (mean
    cosine to the FP32 embeddings)."""
    data = transfer_data(fit, variant["transfer"])
    layers = {"none": "none", "blocks": "blocks", "factorised": tuple(factorised)}[variant["kd_layers"]]
    points = []
    for count in steps:
        student = copy.deepcopy(compressed)
        if variant["train"] == "factors":
            train_factors_only_(student, factorised)
        result = finetune_(student, found.reference, data,
                           kd_spec(count, len(data), variant["lr"], layers, variant["dropout"], variant["local_steps"]))
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


def compare_starts(found, ranks: dict[str, int], validation: bool, kinds: tuple[str, ...] = ("planned", "uniform"),
                   starts: tuple[str, ...] = ("fp32", "drift")) -> list[dict]:
    """Without fine-tuning: planned and/or uniform ranks (``kinds``), FP32-statistics and drift-aware factors, each
    scored on the validation and the held-out sentences; with ``validation`` calibrated on the fit
    split only (so the validation sentences are unseen), else on all train sentences."""
    fit, held = validation_split(found.train)
    rows = []
    for label, chosen in ((kind, ranks if kind == "planned" else None) for kind in kinds):
        for start in starts:
            compressed, records = factorised_model(found, chosen, start, fit if validation else found.train)
            removed = sum(r.params_before - r.params_after for r in records.values())
            row = {"ranks": label, "start": start, "reduction": removed / found.linear,
                   "calibration": "fit" if validation else "train",
                   "output_error": sum(r.output_error for r in records.values())}
            for split, data in (("validation", held), ("heldout", found.heldout)):
                row[split] = evaluate(compressed, "minilm-lowrank", data, found.reference, batch_size=BATCH).value
            print(row, flush=True)
            rows.append(row)
            del compressed
    return rows


def run(steps: tuple[int, ...] = STEPS, variants: tuple[dict, ...] = VARIANTS, validation: bool = False,
        start: str = "fp32", ranks_from: Path | None = None, threads: int = 1) -> dict:
    """The KD curves of ``variants`` from the ``start`` factors; with ``validation`` the factors are
    calibrated and the students trained on the fit split and scored on the validation split."""
    found = setup()
    torch.set_num_threads(threads)
    ranks = start_ranks(found, ranks_from)
    fit, evaluation = validation_split(found.train) if validation else (found.train, found.heldout)
    compressed, records = factorised_model(found, ranks, start, fit)
    factorised = sorted(records)
    removed = sum(r.params_before - r.params_after for r in records.values())
    start_cosine = evaluate(compressed, "minilm-lowrank", evaluation, found.reference, batch_size=BATCH).value
    print(f"{REDUCTION:.0%} planned ranks ({start} factors): reduction {removed / found.linear:.3f}, "
          f"cosine {start_cosine:.4f} on {evaluation.name}", flush=True)
    curves = [curve(found, compressed, factorised, fit, evaluation, steps, variant) for variant in variants]
    return {"model": "builtin:minilm", "target_reduction": REDUCTION, "reduction": removed / found.linear,
            "factorised_layers": len(records), "ranks": {n: r.rank for n, r in records.items()}, "start": start,
            "calibration": fit.name,
            "kd": {"loss": "1 - cosine (+ feature distillation at kd_layers)", "optimizer": "adamw",
                   "batch_size": KD_BATCH, "schedule": "cosine over each run's steps"},
            "evaluated_on": evaluation.name, "evaluation_sentences": len(evaluation), "start_cosine": start_cosine,
            "torch_threads": torch.get_num_threads(), "curves": curves}


def parse_variant(text: str, transfer: str = "train") -> dict:
    """``KD_LAYERS:LR[:FLAG...]`` (KD_LAYERS: none, blocks or factorised; flags: factors, nodropout,
    localN (N block-local steps per module first), or a transfer set, which replaces ``transfer``)."""
    parts = text.split(":")
    local = [int(flag.removeprefix("local")) for flag in parts[2:] if flag.startswith("local")]
    flags = {flag for flag in parts[2:] if not flag.startswith("local")}
    unknown = flags - {"factors", "nodropout", *TRANSFERS}
    if unknown:
        raise SystemExit(f"unknown variant flag {sorted(unknown)[0]!r} in {text!r} "
                         f"(allowed: factors, nodropout, {', '.join(TRANSFERS)})")
    chosen = [flag for flag in TRANSFERS if flag in flags]
    return {"kd_layers": parts[0], "lr": float(parts[1]), "train": "factors" if "factors" in flags else "all",
            "dropout": "nodropout" not in flags, "transfer": chosen[0] if chosen else transfer,
            "local_steps": local[0] if local else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--variants", default=",".join(f"{v['kd_layers']}:{v['lr']:g}" for v in VARIANTS))
    parser.add_argument("--transfer", choices=TRANSFERS, default="train")
    parser.add_argument("--validation", action="store_true")
    parser.add_argument("--start", default="fp32", help="fp32, drift or drift@RIDGE (--compare-starts: a comma list)")
    parser.add_argument("--ranks-from", type=Path, default=None)
    parser.add_argument("--compare-starts", nargs="?", const="planned,uniform", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the KD curves")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.compare_starts:
        found = setup()
        ranks = start_ranks(found, args.ranks_from)
        report = {"model": "builtin:minilm", "target_reduction": REDUCTION, "method": METHOD,
                  "uniform_rank_ratio": UNIFORM_RATIO, "planned_ranks": ranks,
                  "starts": compare_starts(found, ranks, args.validation, tuple(args.compare_starts.split(",")),
                                           tuple(args.start.split(",")) if args.start != "fp32" else ("fp32", "drift"))}
    else:
        variants = tuple(parse_variant(text, args.transfer) for text in args.variants.split(","))
        report = run(tuple(int(s) for s in args.steps.split(",")), variants, args.validation, args.start,
                     args.ranks_from, args.threads)
    if args.json:
        write_json(Path(args.json), report)


if __name__ == "__main__":
    main()
