"""ORT CPU latency of factorised builtin:minilm layers, from the planner's latency table.

The six linear layers of the first encoder block (query, key, value, attention output: 384→384;
intermediate 384→1536; output 1536→384; the other blocks have the same shapes), each timed alone as
the planner's table times it (``compress.backends.ort.latency_table``: the layer and a ReLU,
written by the real exporter, one thread, all variants round-robin in one run): whole (``fp32``)
and factorised at rank ratios 0.25, 0.5, 0.75 (``fp32+rR``, two MatMuls), at the token length of
the first calibration batch of 32 sentences (padded to its longest), at batch 1 and 8.

Run: OMP_NUM_THREADS=1 python benchmarks/lowrank_latency_minilm.py [--json out.json]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from compress.backends.ort.latency_table import latency_table
from compress.data.spec import load_data
from compress.jsonio import write_json
from compress.models.spec import build_model
from compress.plan.ranks import offered_ranks
from compress.vocab.options import LayerOption

RATIOS = (0.25, 0.5, 0.75)
BLOCK = "encoder.encoder.layer.0."
BATCHES = (1, 8)


def run() -> dict:
    torch.set_num_threads(1)
    model = build_model("builtin:minilm").eval()
    batch = next(iter(load_data("builtin:sentences", None, "train").batches(32)))
    inputs = tuple(x[:1] for x in batch.inputs)
    layers = {n: m for n, m in model.named_modules() if n.startswith(BLOCK) and isinstance(m, torch.nn.Linear)}
    options = {n: [LayerOption(None, rank=r) for r in offered_ranks(m, RATIOS)] for n, m in layers.items()}
    rows = {}
    for size in BATCHES:
        table = latency_table(model, inputs, options, batch_size=size)
        for name, kinds in table.median_ms.items():
            for kind, ms in kinds.items():
                rows.setdefault(name[len(BLOCK):], {}).setdefault(kind, {})[f"batch{size}_ms"] = ms
                print(f"batch {size} {name[len(BLOCK):]:<26} {kind:<10} {ms:.4f} ms", flush=True)
    return {"model": "builtin:minilm", "tokens": int(inputs[0].shape[1]), "threads": 1,
            "load_average": os.getloadavg(), "median_ms": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report = run()
    if args.json:
        write_json(Path(args.json), report)


if __name__ == "__main__":
    main()
