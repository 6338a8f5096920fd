"""builtin:minilm: how far KD recovery of low-rank factors reaches, by reduction and by the size of
the transfer set.

``--frontier``: for each reduction of ``results/lowrank_plan_minilm.json`` (the planner's ranks at
10, 20, 30 and 40% of the encoder's linear parameters), Fisher-weighted whitened factors from the
FP32 statistics of the 256 train sentences, then the KD recipe that did best at 30%
(``lowrank_kd_minilm.py``: embedding KD plus feature KD at the blocks, lr 1e-5, dropout off) for
``--steps`` steps on the same 256 sentences; mean cosine on the 64 held-out sentences before and
after.

``--data-scaling``: the 30% ranks; factors calibrated and the student trained (same recipe) on the
first N of the 192 fit sentences only, scored on the 64 validation sentences (the held-out ones are
never looked at). A learning curve in N: the remaining error 1 − cos is fitted by a power law
c·N^(−α) (least squares in log-log), which says how many sentences of the same kind the 0.98 goal
would take if the trend held.

``--plot PNG`` draws both (held-out cosine against reduction before and after KD; validation
cosine against N on log axes with the fitted law and the goal); ``--from JSON`` plots an earlier
result instead of measuring.

Run: OMP_NUM_THREADS=1 python benchmarks/lowrank_kd_reach_minilm.py [--frontier] [--data-scaling]
[--steps 512] [--sizes 48,96,144,192] [--threads 1] [--json out.json] [--plot out.png] [--from JSON]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from lowrank_kd_minilm import BATCH, factorised_model, kd_spec, setup, validation_split  # this folder

from compress.data.source import TokenData
from compress.evaluation import evaluate
from compress.finetune.train import finetune_
from compress.jsonio import write_json

PLANS = Path(__file__).parent / "results" / "lowrank_plan_minilm.json"
LR = 1e-5
STEPS = 512
SIZES = (48, 96, 144, 192)
SCALING_REDUCTION = 0.3
GOAL = 0.98


def distilled(found, ranks: dict[str, int], fit: TokenData, evaluation: TokenData, steps: int) -> dict:
    """Cosine on ``evaluation`` of the factorised model calibrated on ``fit``, before and after
    ``steps`` KD steps on ``fit``."""
    student, _ = factorised_model(found, ranks, "fp32", fit)
    before = evaluate(student, "minilm-lowrank", evaluation, found.reference, batch_size=BATCH).value
    result = finetune_(student, found.reference, fit,
                       kd_spec(steps, len(fit), LR, "blocks", dropout=False))
    after = evaluate(student, "minilm-lowrank-kd", evaluation, found.reference, batch_size=BATCH).value
    return {"start_cosine": before, "kd_cosine": after, "steps": result.steps, "seconds": result.seconds,
            "final_train_loss": result.losses[-1]}


def frontier(found, steps: int) -> list[dict]:
    """KD from the planner's ranks at each reduction of PLANS, held-out cosine."""
    rows = []
    for planned in json.loads(PLANS.read_text())["results"]:
        row = {"target_reduction": planned["target_reduction"], "reduction": planned["reduction"],
               "factorised_layers": planned["factorised_layers"],
               **distilled(found, planned["ranks"], found.train, found.heldout, steps)}
        print(row, flush=True)
        rows.append(row)
    return rows


def power_law(sizes: list[int], cosines: list[float]) -> dict:
    """Least-squares fit of log(1 − cos) = log c − α·log N, and the N at which 1 − cos = 1 − GOAL."""
    x = torch.tensor([math.log(n) for n in sizes], dtype=torch.float64)
    y = torch.tensor([math.log(1 - c) for c in cosines], dtype=torch.float64)
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    intercept = float(y.mean() - slope * x.mean())
    alpha = -slope
    needed = math.exp((intercept - math.log(1 - GOAL)) / alpha) if alpha > 0 else math.inf
    return {"alpha": alpha, "c": math.exp(intercept), "sentences_for_goal": needed}


def data_scaling(found, steps: int, sizes: tuple[int, ...]) -> dict:
    """The 30% ranks, calibrated and distilled on the first N fit sentences, validation cosine."""
    ranks = next(p["ranks"] for p in json.loads(PLANS.read_text())["results"]
                 if p["target_reduction"] == SCALING_REDUCTION)
    fit, validation = validation_split(found.train)
    rows = []
    for size in sizes:
        subset = fit.subset(list(range(size)), f"{fit.name}[:{size}]")
        row = {"sentences": size, **distilled(found, ranks, subset, validation, steps)}
        print(row, flush=True)
        rows.append(row)
    return {"points": rows, "fit": power_law([r["sentences"] for r in rows], [r["kd_cosine"] for r in rows])}


def plot(report: dict, path: Path) -> None:
    """The frontier and the learning curve of ``report`` side by side, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    reductions = [100 * row["reduction"] for row in report["frontier"]]
    left.plot(reductions, [row["start_cosine"] for row in report["frontier"]], "o-", label="factorised, no training")
    left.plot(reductions, [row["kd_cosine"] for row in report["frontier"]], "s-",
              label=f"after {report['kd']['steps']} KD steps on 256 sentences")
    left.axhline(GOAL, color="grey", linestyle="--", label=f"goal {GOAL}")
    left.set(xlabel="encoder linear parameters removed (%)", ylabel="mean cosine, 64 held-out sentences",
             title="planner's ranks, before and after KD")
    left.legend()
    scaling = report["data_scaling"]
    sizes = [row["sentences"] for row in scaling["points"]]
    right.loglog(sizes, [1 - row["kd_cosine"] for row in scaling["points"]], "s", label="after KD (measured)")
    right.loglog(sizes, [1 - row["start_cosine"] for row in scaling["points"]], "o", label="no training (measured)")
    law, needed = scaling["fit"], scaling["fit"]["sentences_for_goal"]
    grid = torch.logspace(math.log10(sizes[0]), math.log10(max(needed, sizes[-1]) * 1.2), 50).tolist()
    right.loglog(grid, [law["c"] * n ** -law["alpha"] for n in grid], ":",
                 label=f"fit c·N^-{law['alpha']:.2f}: goal at N ≈ {needed:,.0f}")
    right.axhline(1 - GOAL, color="grey", linestyle="--", label=f"goal 1 − cos = {1 - GOAL:.2f}")
    right.set(xlabel="transfer sentences N (calibration and KD)", ylabel="1 − mean cosine, 64 validation sentences",
              title=f"{SCALING_REDUCTION:.0%} reduction: learning curve")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frontier", action="store_true")
    parser.add_argument("--data-scaling", action="store_true")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--from", dest="source", type=Path, default=None)
    args = parser.parse_args()
    if args.source is not None:
        plot(json.loads(args.source.read_text()), args.plot or args.source.with_suffix(".png"))
        return
    found = setup()
    torch.set_num_threads(args.threads)
    report = {"model": "builtin:minilm", "kd": {"lr": LR, "kd_layers": "blocks", "dropout": False,
                                                "steps": args.steps, "start": "fp32 statistics"},
              "torch_threads": torch.get_num_threads()}
    if args.frontier:
        report["frontier"] = frontier(found, args.steps)
    if args.data_scaling:
        report["data_scaling"] = data_scaling(found, args.steps, tuple(int(s) for s in args.sizes.split(",")))
    if args.json:
        write_json(Path(args.json), report)
    if args.plot is not None:
        plot(report, args.plot)


if __name__ == "__main__":
    main()
