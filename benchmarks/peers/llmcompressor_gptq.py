"""llm-compressor's GPTQ on a local transformers folder, saved as a plain float checkpoint.

Run with the PEER venv's python (llm-compressor pins its own torch and transformers; nothing of
``compress`` is imported here). Steps:

1. load the folder with the class its ``config.json`` names (``architectures[0]``), float32;
2. GPT-2's ``Conv1D`` layers (weight stored ``[in, out]``) are swapped for equivalent
   ``nn.Linear`` (weight transposed) before calibration: llm-compressor 0.14's ``"Linear"``
   target matches no ``Conv1D``, and its GPTQ takes ``weight`` as ``[rows, columns]`` without
   transposing one; ``--keep-conv1d`` skips the swap (to record what happens as shipped);
3. ``oneshot`` with one ``GPTQModifier``: symmetric int``--bits`` weights, per output channel
   (``--group-size 0``) or in groups of ``--group-size`` along the input, activations float
   (W4A16-style), the weight observer ``--observer`` (default: llm-compressor's, min-max scales;
   ``mse``: its grid search of the clip that minimises the rounding error), everything else left
   at llm-compressor's defaults (damping 1% of the mean diagonal, block size 128, static
   activation ordering unless ``--actorder``, its sequential pipeline), the modules matched by
   ``--ignore`` left float;
4. calibration: ``--calibration`` is a file of lines: ``.txt`` (one text per line, tokenised by
   the folder's tokenizer, at most ``--max-length`` tokens, no padding) or ``.jsonl`` (one
   ``{"input_ids": [...], "attention_mask": [...]}`` per line: exact token blocks); one sample per
   batch, in file order;
5. the fake-quantized weights (on llm-compressor's grid, dequantized to float) are copied into a
   fresh load of the folder, Linear weights transposed back for ``Conv1D``, and saved with
   ``save_pretrained`` (plus the tokenizer files) under ``--out``, so any transformers can read
   it; the run checks that the saved model's outputs equal llm-compressor's quantized model's on
   the first calibration sample and writes ``--out/llmcompressor_run.json`` (versions, seconds,
   the quantized module names, that difference).

Run: /tmp/r-peers-venv/bin/python benchmarks/peers/llmcompressor_gptq.py --model FOLDER
     --calibration FILE --out FOLDER [--bits 4] [--group-size 32|128|0] [--observer mse]
     [--actorder static|weight|none]
     [--ignore lm_head re:.*pooler.*]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch


def load_folder(folder: Path) -> torch.nn.Module:
    """The model class ``config.json`` names, float32, eval mode."""
    import transformers

    architecture = json.loads((folder / "config.json").read_text())["architectures"][0]
    return getattr(transformers, architecture).from_pretrained(folder, dtype=torch.float32).eval()


def conv1d_as_linear_(model: torch.nn.Module) -> list[str]:
    """Swap every ``transformers.Conv1D`` (y = x W + b, W ``[in, out]``) for the equal
    ``nn.Linear`` (W ``[out, in]``); returns the swapped names."""
    from transformers.pytorch_utils import Conv1D

    names = [name for name, module in model.named_modules() if isinstance(module, Conv1D)]
    for name in names:
        conv = model.get_submodule(name)
        linear = torch.nn.Linear(conv.weight.shape[0], conv.weight.shape[1])
        with torch.no_grad():
            linear.weight.copy_(conv.weight.t())
            linear.bias.copy_(conv.bias)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, linear)
    return names


def calibration_samples(path: Path, folder: Path, max_length: int) -> list[dict[str, list[int]]]:
    """One ``{"input_ids", "attention_mask"}`` per non-blank line, unpadded."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        samples = [json.loads(line) for line in lines]
        return [{"input_ids": s["input_ids"], "attention_mask": s.get("attention_mask", [1] * len(s["input_ids"]))}
                for s in samples]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = tokenizer(lines, truncation=True, max_length=max_length)
    return [{"input_ids": ids, "attention_mask": mask} for ids, mask in
            zip(encoded["input_ids"], encoded["attention_mask"])]


def gptq_modifier(bits: int, group_size: int, ignore: list[str], observer: str | None, actorder: str | None):
    """Symmetric int weights per channel (``group_size`` 0) or per group, activations float;
    ``observer`` / ``actorder`` None keep llm-compressor's defaults (``actorder`` "none": off)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import GPTQModifier

    grid = {"strategy": "channel"} if group_size == 0 else {"strategy": "group", "group_size": group_size}
    if observer is not None:
        grid["observer"] = observer
    weights = QuantizationArgs(num_bits=bits, type="int", symmetric=True, **grid)
    scheme = QuantizationScheme(targets=["Linear"], weights=weights)
    order = {} if actorder is None else {"actorder": None if actorder == "none" else actorder}
    return GPTQModifier(config_groups={"group_0": scheme}, ignore=ignore, **order)


def first_output(model: torch.nn.Module, sample: dict[str, list[int]]) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=torch.tensor([sample["input_ids"]]),
                    attention_mask=torch.tensor([sample["attention_mask"]]))
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


def save_float_copy(quantized: torch.nn.Module, folder: Path, out: Path, conv1d: list[str]) -> list[str]:
    """Copy every quantized module's (fake-quantized, float) weight into a fresh load of
    ``folder`` and save it under ``out``; returns the quantized module names."""
    fresh = load_folder(folder)
    names = [name for name, module in quantized.named_modules() if hasattr(module, "weight_scale")]
    with torch.no_grad():
        for name in names:
            weight = quantized.get_submodule(name).weight.detach()
            fresh.get_submodule(name).weight.copy_(weight.t() if name in conv1d else weight)
    fresh.save_pretrained(out)
    for item in folder.iterdir():  # tokenizer and other side files
        if item.is_file() and not (out / item.name).exists():
            shutil.copy(item, out / item.name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="local transformers folder")
    parser.add_argument("--calibration", required=True, type=Path, help=".txt (texts) or .jsonl (token ids)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=32, help="0: per output channel")
    parser.add_argument("--ignore", nargs="*", default=["lm_head", "re:.*pooler.*"])
    parser.add_argument("--observer", help="weight observer (default: llm-compressor's; e.g. mse)")
    parser.add_argument("--actorder", choices=("static", "weight", "none"),
                        help="activation ordering (default: llm-compressor's, static)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--keep-conv1d", action="store_true", help="do not swap GPT-2 Conv1D for Linear")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import compressed_tensors
    import llmcompressor
    import transformers
    from datasets import Dataset
    from llmcompressor import oneshot

    model = load_folder(args.model)
    conv1d = [] if args.keep_conv1d else conv1d_as_linear_(model)
    samples = calibration_samples(args.calibration, args.model, args.max_length)
    dataset = Dataset.from_list(samples)
    began = time.perf_counter()
    recipe = gptq_modifier(args.bits, args.group_size, args.ignore, args.observer, args.actorder)
    oneshot(model=model, dataset=dataset, recipe=recipe,
            num_calibration_samples=len(samples), shuffle_calibration_samples=False, batch_size=1,
            max_seq_length=max(len(s["input_ids"]) for s in samples))
    seconds = round(time.perf_counter() - began, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    names = save_float_copy(model, args.model, args.out, conv1d)
    saved = load_folder(args.out)
    difference = float((first_output(saved, samples[0]) - first_output(model, samples[0])).abs().max())
    versions = {"llmcompressor": llmcompressor.__version__, "compressed_tensors": compressed_tensors.__version__,
                "torch": torch.__version__, "transformers": transformers.__version__}
    report = {"versions": versions,
              "bits": args.bits, "group_size": args.group_size, "observer": args.observer or "default",
              "actorder": args.actorder or "default",
              "ignore": args.ignore, "conv1d_swapped": len(conv1d),
              "calibration_samples": len(samples), "calibration_tokens": sum(len(s["input_ids"]) for s in samples),
              "quantized_modules": names, "oneshot_seconds": seconds, "threads": args.threads,
              "saved_vs_quantized_max_abs_diff": difference}
    (args.out / "llmcompressor_run.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "quantized_modules"} | {"quantized": len(names)}))


if __name__ == "__main__":
    main()
