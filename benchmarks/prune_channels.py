"""Channel pruning on builtin:mnist-cnn: ONNX Runtime CPU latency (FP32, batch 32) and held-out
accuracy, unpruned vs every prunable channel group at 50% (magnitude group norm, widths rounded to
multiples of 8; no fine-tuning, so the accuracy is the one-shot drop).

Both models are exported with torch.onnx (TorchScript exporter, opset 17) and timed round-robin
by ``compress.backends.ort.latency.measure_latency`` (1 intra-op thread, ORT_ENABLE_ALL). The machine
is shared: read the ratio, not the absolute milliseconds.

Run: python benchmarks/prune_channels.py [--ratio 0.5] [--runs 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import warnings

import torch
from torch import nn

from compress.data.spec import load_data
from compress.backends.ort.latency import LatencySpec, measure_latency
from compress.jsonio import write_json
from compress.models.spec import build_model
from compress.prune.apply import prune_model_
from compress.vocab.groups import channel_groups
from compress.prune.records import PruneSettings

BATCH = 32


def onnx_bytes(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(BATCH, 1, 28, 28),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
    return buffer.getvalue()


def accuracy(model: nn.Module, data) -> float:
    with torch.no_grad():
        return float((model.eval()(*data.inputs).argmax(1) == data.targets).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json")
    args = parser.parse_args()
    model = build_model("builtin:mnist-cnn")
    heldout = load_data("builtin:mnist5k", "heldout", "heldout")
    pruned = copy.deepcopy(model)
    request = {g.name: PruneSettings(args.ratio, "channel", round_to=8) for g in channel_groups(model) if g.reason is None}
    records = prune_model_(pruned, request)
    latency = measure_latency({"unpruned": onnx_bytes(model), "pruned": onnx_bytes(pruned)},
                              LatencySpec(batch_sizes=(BATCH,), warmup=20, runs=args.runs))
    report = {
        "ratio": args.ratio,
        "groups": {name: [r.channels, r.kept] for name, r in records.groups.items()},
        "params": {"unpruned": sum(p.numel() for p in model.parameters()),
                   "pruned": sum(p.numel() for p in pruned.parameters())},
        "heldout_accuracy": {"unpruned": accuracy(model, heldout), "pruned": accuracy(pruned, heldout)},
        "latency_ms": {name: {"median": latency.get(name, BATCH).median_ms, "p90": latency.get(name, BATCH).p90_ms}
                       for name in ("unpruned", "pruned")},
    }
    report["speedup"] = report["latency_ms"]["unpruned"]["median"] / report["latency_ms"]["pruned"]["median"]
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
