"""Second-order reconstruction vs round-to-nearest and first-order pruning, weights only, no fine-tuning.

builtin:mnist-cnn (BatchNorms folded first, as ``apply`` does; calibration: 512 training digits;
held-out accuracy on the 1,000 held-out digits):
- weights at uniform 2 and 3 bits per channel, and two mixes around 2.5 bits (a 2-bit head with
  3-bit convs: 2.28 bits on average by parameters; 2-bit convs with a 3-bit head: 2.72 bits);
  round-to-nearest (max scales, the toolkit's default; and with the MSE clip GPTQ starts from),
  GPTQ (the default: scales re-fitted by least squares), true-sequential and one-pass, and without
  the re-fit; with ``--mnist-plans``, instead, the weight-only plans of ``compress plan --json``
  (round to nearest vs GPTQ with and without the re-fit);
- 50% unstructured and 2:4 pruning (layers whose reduction size is not a multiple of 4 are left
  dense for 2:4): magnitude, Wanda (mask only; and with the least-squares re-fit of the kept
  weights), SparseGPT plain and loss-aware, SparseGPT jointly with 4-bit GPTQ.
Loss-aware GPTQ is not run: with a diagonal output curvature the per-row GPTQ solution is unchanged,
so its weights are identical to plain GPTQ (checked in a first run: equal accuracy in all 4 configs).
builtin:minilm (calibration: the 256 training sentences; mean cosine of the sentence embeddings to the
float model on the 64 held-out ones): 4-bit weights on all linear layers per channel and in blocks of
32 and 128, round-to-nearest (max scales per channel; MSE clip) vs GPTQ plain and loss-aware (blocks of
32), with the reconstruction time. GPTQ is the toolkit's default (padding tokens left out of H, scales
re-fitted by least squares); on blocks ``gptq_asymmetric`` adds zero points (ORT only);
``--minilm-ablation`` also runs, on blocks of 32, GPTQ as it was before those two steps
(``gptq_padding_counted``: padding rows in H, no re-fit), with the re-fit only off
(``gptq_no_refit``), and with the opt-in second sweep on the re-fitted scales
(``gptq_second_sweep``); GPTQ includes the input-drift correction (its target is the float model's
output, ``compress/reconstruct/drift.py``) and ``--input-drift`` adds, on every MiniLM grid and
every mnist-cnn bit mix or plan, GPTQ without it (``gptq_no_drift``). Weight codes: ``compress.quant.weights.weight_code_range`` (−8…7 at 4 bits,
−4…3 at 3 bits, −1…1 at 2 bits). ``--part minilm-pruning``: the pruning comparison above on MiniLM's 36 encoder
linears (no loss-aware row), scored by the same cosine.

Run: python benchmarks/reconstruct.py [--part mnist|minilm|minilm-pruning|all] [--loss-aware-minilm] [--minilm-ablation]
     [--input-drift]
     [--grids "blocks of 32" ...] [--threads N]
     [--json benchmarks/results/reconstruct.json]
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import replace

import torch
from torch import nn

from compress.data.spec import load_data
from compress.jsonio import write_json
from compress.models.spec import build_model
from compress.plan.make import plannable_layers
from compress.prune.masks import pruning_mask
from compress.quant.bn_fold import fold_batchnorm_
from compress.quant.weights import fake_quantize_per_channel
from compress.reconstruct.gptq import column_scales, grid_scales, round_to_grid
from compress.reconstruct.layer import ReconstructSettings
from compress.reconstruct.output import output_row_weights
from compress.reconstruct.sequential import reconstruct_model_
from compress.reconstruct.sparsegpt import wanda_keep
from compress.reconstruct.stats import collect_layer_stats


def mnist_setup() -> tuple[nn.Module, list, list, object]:
    model = build_model("builtin:mnist-cnn").eval()
    fold_batchnorm_(model)
    train = load_data("builtin:mnist5k", "train", "train").subset(range(512), "calibration")
    batches = list(train.batches(128))
    heldout = load_data("builtin:mnist5k", "heldout", "heldout")
    return model, batches, [b.inputs for b in batches], heldout


def accuracy(model: nn.Module, data) -> float:
    correct = 0
    with torch.no_grad():
        for batch in data.batches(500):
            correct += int((model(*batch.inputs).argmax(1) == batch.targets).sum())
    return correct / len(data)


def rounded_(model: nn.Module, bits: dict[str, int], mse_clip: bool, weight_block: int | None = None) -> nn.Module:
    """Round to nearest: per-channel max scales (``mse_clip`` False) or the MSE-clipped grid."""
    with torch.no_grad():
        for name, b in bits.items():
            weight = model.get_submodule(name).weight
            if mse_clip:
                rows = weight.reshape(weight.shape[0], -1)
                scales = column_scales(grid_scales(weight, b, weight_block), rows.shape[1])
                weight.copy_(round_to_grid(rows, scales, b).reshape(weight.shape))
            else:
                weight.copy_(fake_quantize_per_channel(weight, b))
    return model


def reconstructed_(model: nn.Module, settings: dict[str, ReconstructSettings], inputs: list, sequential: bool = True,
                   row_weights: dict | None = None, count_padding: bool = False) -> tuple[nn.Module, dict]:
    """``count_padding``: each text batch wrapped so that ``token_mask`` does not recognise it (every
    position, padding included, enters H: the behaviour before padding was left out)."""
    if count_padding:
        _, report = reconstruct_model_(model, settings, [(b,) for b in inputs], sequential, row_weights,
                                       forward=lambda m, wrapped: m(*wrapped[0]))
    else:
        _, report = reconstruct_model_(model, settings, inputs, sequential=sequential, row_weights=row_weights)
    return model, {"seconds": round(report.seconds, 2),
                   "predicted_error": {n: r.predicted_error for n, r in report.layers.items()},
                   "damp_raises": sum(r.damp_raises for r in report.layers.values())}


def mnist_quantization(model, batches, inputs, heldout, drift: bool = False) -> dict:
    names = list(plannable_layers(model))
    convs = [n for n in names if n != "head"]
    configs = {"uniform 3 bits": dict.fromkeys(names, 3), "uniform 2 bits": dict.fromkeys(names, 2),
               "2-bit head, 3-bit convs": {**dict.fromkeys(convs, 3), "head": 2},
               "2-bit convs, 3-bit head": {**dict.fromkeys(convs, 2), "head": 3}}
    sizes = {n: model.get_submodule(n).weight.numel() for n in names}
    results = {"fp32": accuracy(model, heldout)}
    for label, bits in configs.items():
        average = sum(bits[n] * sizes[n] for n in names) / sum(sizes.values())
        row = {"average_bits": round(average, 3)}
        row["rtn"] = accuracy(rounded_(copy.deepcopy(model), bits, mse_clip=False), heldout)
        row["rtn_mse_clip"] = accuracy(rounded_(copy.deepcopy(model), bits, mse_clip=True), heldout)
        settings = {n: ReconstructSettings(bits=b) for n, b in bits.items()}
        no_refit = {n: replace(s, refit_scales=False) for n, s in settings.items()}
        runs = {"gptq": (settings, {}), "gptq_one_pass": (settings, {"sequential": False}), "gptq_no_refit": (no_refit, {})}
        if drift:
            runs["gptq_no_drift"] = ({n: replace(s, input_drift=False) for n, s in settings.items()}, {})
        for method, (layer_settings, kwargs) in runs.items():
            compressed, info = reconstructed_(copy.deepcopy(model), layer_settings, inputs, **kwargs)
            row[method], row[method + "_info"] = accuracy(compressed, heldout), info
        results[label] = row
        print(label, {k: v for k, v in row.items() if not k.endswith("_info")}, flush=True)
    return results


def mnist_plans(model, batches, inputs, heldout, plans: list[str], drift: bool = False) -> dict:
    """Plans written by ``compress plan --json`` (weight bits per layer; weights only): round to
    nearest (max scales; MSE clip) vs GPTQ without and with the scale re-fit (the default)."""
    import json

    results = {}
    for path in plans:
        layers = json.loads(open(path, encoding="utf-8").read())["layers"]
        if any(layer["sparsity"] or layer["act_bits"] for layer in layers.values()):
            raise SystemExit(f"{path}: only weight-only plans without sparsity are measured here")
        bits = {n: layer["weight_bits"] for n, layer in layers.items() if layer["weight_bits"] is not None}
        sizes = {n: layer["num_weights"] for n, layer in layers.items()}
        row = {"bits": bits, "average_bits": round(sum(bits.get(n, 32) * sizes[n] for n in sizes) / sum(sizes.values()), 3)}
        row["rtn"] = accuracy(rounded_(copy.deepcopy(model), bits, mse_clip=False), heldout)
        row["rtn_mse_clip"] = accuracy(rounded_(copy.deepcopy(model), bits, mse_clip=True), heldout)
        variants = {"gptq_no_refit": {"refit_scales": False}, "gptq": {}} | ({"gptq_no_drift": {"input_drift": False}} if drift else {})
        for method, options in variants.items():
            settings = {n: ReconstructSettings(bits=b, **options) for n, b in bits.items()}
            compressed, info = reconstructed_(copy.deepcopy(model), settings, inputs)
            row[method], row[method + "_info"] = accuracy(compressed, heldout), info
        results[path] = row
        print(path, {k: v for k, v in row.items() if not k.endswith("_info")}, flush=True)
    return results


def mnist_pruning(model, batches, inputs, heldout) -> dict:
    names = list(plannable_layers(model))
    rho = output_row_weights(copy.deepcopy(model), [(b.inputs, b.targets) for b in batches], names, "ce")
    return pruning_comparison(model, names, inputs, lambda m: accuracy(m, heldout), rho)


def pruning_comparison(model: nn.Module, names: list[str], inputs: list, score, rho: dict | None = None) -> dict:
    """50% unstructured and 2:4 on ``names``: magnitude, Wanda, Wanda + re-fit, SparseGPT (loss-aware
    too when ``rho`` is given), and SparseGPT joint with 4-bit GPTQ (unstructured); ``score`` of each."""
    results = {}
    for pattern in ("unstructured", "2:4"):
        layers = [n for n in names if pattern != "2:4" or model.get_submodule(n).weight[0].numel() % 4 == 0]
        row = {"layers": layers}
        magnitude = copy.deepcopy(model)
        with torch.no_grad():
            for n in layers:
                weight = magnitude.get_submodule(n).weight
                weight.mul_(pruning_mask(weight, 0.5, pattern))
        row["magnitude"] = score(magnitude)
        row["wanda"] = score(wanda_(copy.deepcopy(model), layers, pattern, inputs))
        methods = {"wanda_refit": {}, "sparsegpt": {}} | ({"sparsegpt_loss_aware": {"row_weights": rho}} if rho else {})
        for method, kwargs in methods.items():
            settings = {n: ReconstructSettings(ratio=0.5, pattern=pattern, prune_method=method.split("_")[0]) for n in layers}
            compressed, info = reconstructed_(copy.deepcopy(model), settings, inputs, **kwargs)
            row[method], row[method + "_info"] = score(compressed), info
        if pattern == "unstructured":  # joint with 4-bit weights
            settings = {n: ReconstructSettings(bits=4, ratio=0.5) for n in layers}
            compressed, info = reconstructed_(copy.deepcopy(model), settings, inputs)
            row["sparsegpt_joint_4bit"], row["sparsegpt_joint_4bit_info"] = score(compressed), info
        results[f"50% {pattern}"] = row
        print(pattern, {k: v for k, v in row.items() if not k.endswith("_info") and k != "layers"}, flush=True)
    return results


def minilm_pruning() -> dict:
    """The pruning comparison on MiniLM's 36 encoder linears, mean cosine on the held-out sentences."""
    model = build_model("builtin:minilm").eval()
    calibration = load_data("builtin:sentences", "train", "train")
    heldout = load_data("builtin:sentences", "heldout", "heldout")
    names = [n for n in plannable_layers(model) if ".encoder.layer." in n]
    return pruning_comparison(model, names, [b.inputs for b in calibration.batches(32)],
                              lambda m: cosine(m, model, heldout))


def wanda_(model: nn.Module, layers: list[str], pattern: str, inputs: list) -> nn.Module:
    """Plain Wanda: each layer's mask from the float model's input norms, no weight update."""
    stats = collect_layer_stats(model, inputs, layers)
    with torch.no_grad():
        for name in layers:
            weight = model.get_submodule(name).weight
            rows = weight.reshape(weight.shape[0], -1)
            energy = torch.diagonal(stats[name].hessian, dim1=1, dim2=2).repeat_interleave(rows.shape[0] // stats[name].groups, 0)
            weight.mul_(wanda_keep(rows.double(), energy, 0.5, pattern).reshape(weight.shape))
    return model


def cosine(model: nn.Module, reference: nn.Module, data) -> float:
    total = 0.0
    with torch.no_grad():
        for batch in data.batches(64):
            total += float(nn.functional.cosine_similarity(model(*batch.inputs), reference(*batch.inputs)).sum())
    return total / len(data)


GRIDS = {"blocks of 32": 32, "per channel": None, "blocks of 128": 128}


def minilm(loss_aware: bool, ablation: bool = False, grids: list[str] | None = None, json_path: str | None = None,
           report: dict | None = None, drift: bool = False) -> dict:
    """Blocks of 32 first (the headline goal), then per channel and blocks of 128; each row printed and
    (with ``json_path``) written as soon as it is measured. Loss-aware GPTQ runs on blocks of 32 only:
    with diagonal row weights the per-row solution is unchanged, which the run checks
    (``loss_aware_max_weight_change``, the largest |Δw| between the two reconstructions)."""
    model = build_model("builtin:minilm").eval()
    calibration = load_data("builtin:sentences", "train", "train")
    heldout = load_data("builtin:sentences", "heldout", "heldout")
    inputs = [b.inputs for b in calibration.batches(32)]
    names = [n for n in plannable_layers(model) if ".encoder.layer." in n]
    results = {"layers": len(names), "threads": torch.get_num_threads()}
    for label in grids or list(GRIDS):
        block = GRIDS[label]
        row = {"rtn_mse_clip": cosine(rounded_(copy.deepcopy(model), dict.fromkeys(names, 4), True, block), model, heldout)}
        if block is None:
            row["rtn"] = cosine(rounded_(copy.deepcopy(model), dict.fromkeys(names, 4), False), model, heldout)
        print(label, row, flush=True)
        settings = {n: ReconstructSettings(bits=4, weight_block=block) for n in names}
        variants = {"gptq": (settings, {})}
        if block is not None:
            variants["gptq_asymmetric"] = ({n: replace(s, symmetric=False) for n, s in settings.items()}, {})
        if drift:
            variants["gptq_no_drift"] = ({n: replace(s, input_drift=False) for n, s in settings.items()}, {})
        if ablation and block == 32:
            variants["gptq_no_refit"] = ({n: replace(s, refit_scales=False) for n, s in settings.items()}, {})
            variants["gptq_padding_counted"] = (variants["gptq_no_refit"][0], {"count_padding": True})
            variants["gptq_second_sweep"] = ({n: replace(s, second_sweep=True) for n, s in settings.items()}, {})
        for method, (layer_settings, kwargs) in variants.items():
            compressed, info = reconstructed_(copy.deepcopy(model), layer_settings, inputs, **kwargs)
            row[method], row[method + "_seconds"] = cosine(compressed, model, heldout), info["seconds"]
            row[method + "_damp_raises"] = info["damp_raises"]
            print(label, {k: v for k, v in row.items() if not k.endswith("_damp_raises")}, flush=True)
            if loss_aware and block == 32 and method == "gptq":
                began = time.perf_counter()
                rho = output_row_weights(copy.deepcopy(model), [(b.inputs, None) for b in calibration.batches(32)], names, "distill")
                row["row_weights_seconds"] = round(time.perf_counter() - began, 1)
                aware, info = reconstructed_(copy.deepcopy(model), settings, inputs, row_weights=rho)
                row["gptq_loss_aware"], row["gptq_loss_aware_seconds"] = cosine(aware, model, heldout), info["seconds"]
                row["loss_aware_max_weight_change"] = max(
                    float((aware.get_submodule(n).weight - compressed.get_submodule(n).weight).abs().max()) for n in names)
                del aware
                print(label, row, flush=True)
            del compressed
        results[label] = row
        if json_path:
            write_json(json_path, {**(report or {}), "minilm_w4": results})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("mnist", "minilm", "minilm-pruning", "all"), default="all")
    parser.add_argument("--loss-aware-minilm", action="store_true", help="also run loss-aware GPTQ on MiniLM")
    parser.add_argument("--minilm-ablation", action="store_true",
                        help="also run GPTQ without the scale re-fit, with padding counted and with a second sweep (blocks of 32)")
    parser.add_argument("--input-drift", action="store_true",
                        help="also run GPTQ without the input-drift correction (every MiniLM grid, mnist-cnn mix and plan)")
    parser.add_argument("--grids", nargs="+", choices=list(GRIDS), help="MiniLM grids to run (default: all)")
    parser.add_argument("--mnist-plans", nargs="+", metavar="PLAN_JSON",
                        help="with --part mnist: only measure these weight-only plans (compress plan --json)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {}
    if args.part in ("mnist", "all"):
        setup = mnist_setup()
        if args.mnist_plans:
            report["mnist_cnn_plans"] = mnist_plans(*setup, args.mnist_plans, args.input_drift)
        else:
            report["mnist_cnn_quantization"] = mnist_quantization(*setup, args.input_drift)
            report["mnist_cnn_pruning"] = mnist_pruning(*setup)
        if args.json:  # written after each part, so a long MiniLM run cannot lose it
            write_json(args.json, report)
    if args.part in ("minilm", "all"):
        report["minilm_w4"] = minilm(args.loss_aware_minilm, args.minilm_ablation, args.grids, args.json, report,
                                    args.input_drift)
    if args.part in ("minilm-pruning", "all"):
        report["minilm_pruning"] = minilm_pruning()
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
