"""Intel Neural Compressor's weight-only GPTQ and RTN side by side with ours, weights only, no
fine-tuning, at equal bits and grid, in one process.

INC (``neural-compressor-pt``, measured with 3.10) is a peer, never a dependency: it is installed
outside our env and put on ``sys.path`` only here, with ``--inc-path``. Its PyTorch API runs on our
torch: ``prepare(model, GPTQConfig(...))``, the calibration batches through the prepared model,
``convert(model)``; its converted layers dequantize their packed weights in ``forward``, so the
converted model is measured directly with our metrics. A peer run that fails is recorded as its
one-line error.

- builtin:minilm: 4-bit symmetric weights in blocks of 32 (``group_size=32``) and per channel
  (``group_size=-1``); calibration: the 256 training sentences one per batch (no padding: the same
  4,325 real tokens our GPTQ sees, which leaves padding out of H); mean cosine of the sentence
  embeddings to the float model on the 64 held-out sentences (``reconstruct.cosine``). INC's GPTQ
  with its defaults (damping 1%, no act-order, lazy block 2048, min-max scales), and tuned to our
  settings (act-order with static groups, block 128, true-sequential, its MSE scale search); its
  RTN (min-max and MSE); ours (``reconstruct.reconstructed_``, the default GPTQ) re-run side by side.
- builtin:mnist-cnn (BatchNorms folded, 512 training digits, 1,000 held-out digits): uniform 3 and
  2 bits per output channel, INC's GPTQ and RTN vs ours; INC as shipped (its white list: Linear
  only, so only the head is quantized and the convs stay float: not equal bits) and with
  ``white_list=[Linear, Conv2d]`` (``_with_convs``: every layer, equal bits).

INC's symmetric int grid: s = max|w|/((2^b − 1)/2), stored codes 0…2^b − 1 with zero point 2^(b−1),
i.e. the signed codes −2^(b−1)…2^(b−1) − 1 (ours: ``compress.quant.weights.code_range``).

Install (no dependencies into any shared env; about 10 s):
     python -m pip download --no-deps -d /tmp/inc-wheels neural-compressor-pt==3.10 neural-compressor==3.10 accelerate
     python -m pip install --no-deps --target /tmp/h-grid-inc /tmp/inc-wheels/*.whl prettytable psutil py-cpuinfo wcwidth
(its GPTQ imports ``accelerate``; everything else it needs is in our env)

Run: python benchmarks/peers/inc_gptq.py --inc-path /tmp/h-grid-inc [--part minilm|mnist|all]
     [--grids "blocks of 32" "per channel"] [--threads 1] [--json benchmarks/results/inc_peers.json]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmcompressor_peers import minilm_train_sentences  # noqa: E402
from reconstruct import accuracy, cosine, mnist_setup, reconstructed_  # noqa: E402
from reconstruct_peers import one_line  # noqa: E402

from compress.data.spec import load_data  # noqa: E402
from compress.jsonio import write_json  # noqa: E402
from compress.models.minilm import model_dir, tokenize  # noqa: E402
from compress.models.spec import build_model  # noqa: E402
from compress.plan.make import plannable_layers  # noqa: E402
from compress.reconstruct.layer import ReconstructSettings  # noqa: E402

MINILM_GRIDS = {"blocks of 32": 32, "per channel": -1, "blocks of 128": 128}
GPTQ_TUNED = {"act_order": True, "static_groups": True, "block_size": 128, "true_sequential": True, "use_mse_search": True}


def inc_quantized(model: nn.Module, config, batches: list[tuple]) -> tuple[nn.Module | None, dict]:
    """INC's ``prepare`` → calibration → ``convert`` on ``model`` (modified); (model, record) or
    (None, {"failed": one line})."""
    from neural_compressor.torch.quantization import convert, prepare

    began = time.perf_counter()
    try:
        prepared = prepare(model, config)
        with torch.no_grad():
            for inputs in batches:
                prepared(*inputs)
        quantized = convert(prepared)
    except Exception as exc:  # a peer's failure of any kind is the measurement
        return None, {"failed": one_line(exc)}
    converted = sum(type(m).__name__ != type(model).__name__ and "WeightOnly" in type(m).__name__
                    for m in quantized.modules())
    return quantized, {"seconds": round(time.perf_counter() - began, 1), "converted_layers": converted}


def inc_configs(bits: int, group_size: int, model_path: Path, types: tuple[type, ...] = (nn.Linear,)
                ) -> dict[str, Callable[[], object]]:
    """INC's RTN and GPTQ configs at ``bits`` (symmetric), per ``group_size`` (−1: per channel), on
    the layer ``types`` (INC's default white list is Linear only). ``model_path``: a local folder;
    INC 3.10's GPTQ resolves it even when not layer-wise, and an empty one makes it try a hub
    download and fail."""
    from neural_compressor.torch.quantization import GPTQConfig, RTNConfig

    common = {"bits": bits, "use_sym": True, "group_size": group_size, "white_list": list(types)}
    gptq = {**common, "model_path": str(model_path)}
    return {
        "inc_rtn": lambda: RTNConfig(**common, use_layer_wise=False),
        "inc_rtn_mse": lambda: RTNConfig(**common, use_layer_wise=False, use_mse_search=True),
        "inc_gptq": lambda: GPTQConfig(**gptq),
        "inc_gptq_tuned": lambda: GPTQConfig(**gptq, **GPTQ_TUNED),
    }


def measured(row: dict, name: str, model: nn.Module | None, record: dict, metric: Callable[[nn.Module], float]) -> None:
    row[name] = record if model is None else {"metric": metric(model), **record}
    print(name, row[name], flush=True)


def minilm_part(grids: list[str]) -> dict:
    reference = build_model("builtin:minilm").eval()
    heldout = load_data("builtin:sentences", "heldout", "heldout")
    ours_inputs = [b.inputs for b in load_data("builtin:sentences", "train", "train").batches(32)]
    peer_inputs = [tokenize([text]) for text in minilm_train_sentences()]
    names = [n for n in plannable_layers(reference) if ".encoder.layer." in n]
    results = {"metric": "mean cosine to float, 64 held-out sentences", "layers": len(names)}
    for label in grids:
        group = MINILM_GRIDS[label]
        row: dict = {}
        settings = {n: ReconstructSettings(bits=4, weight_block=None if group < 0 else group) for n in names}
        ours, info = reconstructed_(copy.deepcopy(reference), settings, ours_inputs)
        measured(row, "ours_gptq", ours, {"seconds": info["seconds"]}, lambda m: cosine(m, reference, heldout))
        del ours
        for name, config in inc_configs(4, group, model_dir()).items():
            model, record = inc_quantized(copy.deepcopy(reference), config(), peer_inputs)
            measured(row, name, model, record, lambda m: cosine(m, reference, heldout))
            del model
        results[label] = row
    return results


def mnist_part() -> dict:
    model, batches, inputs, heldout = mnist_setup()
    names = list(plannable_layers(model))
    results = {"metric": "held-out accuracy, 1,000 digits", "fp32": accuracy(model, heldout)}
    for bits in (3, 2):
        row: dict = {}
        settings = {n: ReconstructSettings(bits=bits) for n in names}
        ours, info = reconstructed_(copy.deepcopy(model), settings, inputs)
        measured(row, "ours_gptq", ours, {"seconds": info["seconds"]}, lambda m: accuracy(m, heldout))
        for types in ((nn.Linear,), (nn.Linear, nn.Conv2d)):
            suffix = "" if len(types) == 1 else "_with_convs"
            for name, config in inc_configs(bits, -1, Path(tempfile.gettempdir()), types).items():
                quantized, record = inc_quantized(copy.deepcopy(model), config(), inputs)
                measured(row, name + suffix, quantized, {**record, "of_layers": len(names)}, lambda m: accuracy(m, heldout))
        results[f"uniform {bits} bits"] = row
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inc-path", required=True, help="folder holding neural_compressor (pip --target)")
    parser.add_argument("--part", choices=("minilm", "mnist", "all"), default="all")
    parser.add_argument("--grids", nargs="+", choices=list(MINILM_GRIDS), default=["blocks of 32", "per channel"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    sys.path.insert(0, args.inc_path)
    import neural_compressor

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    report = {"inc_version": neural_compressor.__version__, "torch": torch.__version__, "threads": args.threads}
    if args.part in ("mnist", "all"):
        report["mnist_cnn"] = mnist_part()
        if args.json:
            write_json(args.json, report)
    if args.part in ("minilm", "all"):
        report["minilm_w4"] = minilm_part(args.grids)
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
