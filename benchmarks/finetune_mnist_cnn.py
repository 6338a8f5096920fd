"""Recovery fine-tuning on builtin:mnist-cnn: every Conv/Linear weight fake-quantized to 3 bits
per output channel (symmetric, straight-through gradient) with a fixed 50% magnitude mask, then
QAT+KD (teacher: the FP32 model) for at most 2 epochs on the 4,000 training digits, with the
learning rate derived from the sharpness. Held-out accuracy (1,000 digits) of FP32, the
compressed model before and after, the time it took, and the sharpness history.

Run from the repository root (it borrows the test STE from tests/test_finetune_ste.py):
    python -m benchmarks.finetune_mnist_cnn [--epochs 2] [--optimizer sgd] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from compress.data.spec import load_data
from compress.finetune.spec import FinetuneSpec
from compress.finetune.train import finetune_
from compress.jsonio import write_json
from compress.models.spec import build_model
from tests.helpers.ste import quantize_and_prune_


def accuracy(model: torch.nn.Module, data) -> float:
    with torch.no_grad():
        return float((model(*data.inputs).argmax(1) == data.targets).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--sharpness-every", type=int, default=25, metavar="STEPS",
                        help="track λ_max every STEPS steps (0: only the initial measurement for the lr)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()

    teacher = build_model("builtin:mnist-cnn")
    train = load_data("builtin:mnist5k", "train", "train")
    heldout = load_data("builtin:mnist5k", "heldout", "heldout")
    student = quantize_and_prune_(copy.deepcopy(teacher), args.bits, args.sparsity)
    before = {"fp32": accuracy(teacher, heldout), "compressed": accuracy(student, heldout)}
    spec = FinetuneSpec(mode="qat+kd", epochs=args.epochs, optimizer=args.optimizer,
                        sharpness_every=args.sharpness_every)
    start = time.perf_counter()
    result = finetune_(student, teacher, train, spec)
    seconds = time.perf_counter() - start
    after = accuracy(student, heldout)
    print(f"held-out accuracy: fp32 {before['fp32']:.2%}, {args.bits}-bit + {args.sparsity:.0%} sparse "
          f"{before['compressed']:.2%} -> {after:.2%} after {result.steps} steps ({result.epochs_run:.2f} epochs) "
          f"of QAT+KD in {seconds:.1f} s ({result.sharpness_seconds:.1f} s of it measuring sharpness)")
    print(f"lr {result.lr:.4g} from λ_max {result.initial_sharpness:.4g} ({args.optimizer})")
    for point in result.sharpness_history:
        print(f"  step {point.step:4d}: λ_max {point.sharpness:9.4g}  lr {point.lr:.4g}  stable lr < {point.stable_lr:.4g}")
    if args.json:
        write_json(args.json, {"accuracy_fp32": before["fp32"], "accuracy_compressed": before["compressed"],
                               "accuracy_recovered": after, "seconds": seconds, "bits": args.bits,
                               "sparsity": args.sparsity, "result": result.to_dict()})


if __name__ == "__main__":
    main()
