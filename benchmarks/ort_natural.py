"""The natural ONNX Runtime path against FP32 and ORT's ``quantize_static`` (issue 12's first target).

Run (about 30 minutes on the shared 2-core machine; every stage with one thread)::

    python benchmarks/ort_natural.py --json benchmarks/results/ort_natural.json

For builtin:mnist-cnn and ``residual_cnn`` below (BatchNorm, depthwise convs, residual adds; trained
here on the 4,000 training digits of builtin:mnist5k on first use and cached), exactly what a user
types::

    compress plan MODEL --data builtin:mnist5k --budget avg_bits=8 --backend ort-cpu -o plan.yaml
    compress apply plan.yaml -o checkpoint
    compress export checkpoint --target ort -o export

then the same at ``avg_bits=4`` for the file size. FP32 (``float_onnx``), ours (``export/model.onnx``)
and ORT ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, min-max, its
pre-processing, calibrated on the first 1,024 training digits as the plan is) of both models are
timed side by side in one run (``measure_latency``: warm-up, then round robin, medians, 1 intra-op
thread) at batch 1 and 32; accuracy on the 1,000 held-out digits run by ORT; file bytes on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DATA = "builtin:mnist5k"
BATCHES = (1, 32)
CALIBRATION = 1024


class Residual(nn.Module):
    """relu(x + BN(pw(relu(BN(dw(x)))))): a depthwise-separable block with an identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                                nn.BatchNorm2d(channels))
        self.pw = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.pw(torch.relu(self.dw(x))))


class ResidualCNN(nn.Module):
    """conv3x3(1→16) BN ReLU pool → conv3x3(16→W) BN ReLU pool → 2 residual blocks (W) → global
    average pool → linear(W→10): 1×28×28 digits; W = 96 (35k parameters). At W = 48 (13.5k
    parameters) the ONNX graph itself (node and tensor names, per-channel scales, int32 biases: about
    18 kB) outweighed the weights, so no export could reach 0.3× the FP32 file."""

    def __init__(self, width: int = 96) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.conv = nn.Sequential(nn.Conv2d(16, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.blocks = nn.Sequential(Residual(width), Residual(width))
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.conv(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


def residual_cnn() -> ResidualCNN:
    """The trained ResidualCNN (the model spec ``benchmarks/ort_natural.py:residual_cnn``): AdamW,
    6 epochs, seed 0, on the mnist5k training split; trained on first use, then read from the cache."""
    from compress.cache import cache_dir
    from compress.data.builtin import mnist5k

    path = cache_dir("models") / "ort-natural-residual-cnn-v2.pt"
    model = ResidualCNN()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train = mnist5k().split("train")
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    (images,), labels = train.inputs, train.targets
    model.train()
    for _ in range(6):
        order = torch.randperm(len(train))
        for start in range(0, len(train), 64):
            index = order[start:start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[index]), labels[index]).backward()
            optimizer.step()
    torch.save(model.state_dict(), path)
    return model.eval()


MODELS = {"mnist-cnn": "builtin:mnist-cnn", "residual-cnn": f"{Path(__file__).resolve()}:residual_cnn"}


def cli(*args: str) -> None:
    """One ``compress`` command as a user runs it (one thread)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    print("$ compress " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "compress.cli.main", *args], check=True, env=env)


def natural_path(spec: str, bits: int, folder: Path) -> tuple[Path, dict]:
    """plan → apply → export at ``avg_bits=bits`` on ort-cpu; the ONNX file and the plan's record
    (an export already in ``folder``, from an earlier run with ``--work``, is reused)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "export" / "model.onnx").exists():
        return folder / "export" / "model.onnx", yaml.safe_load((folder / "plan.yaml").read_text())
    cli("plan", spec, "--data", DATA, "--budget", f"avg_bits={bits}", "--backend", "ort-cpu",
        "-o", str(folder / "plan.yaml"))
    cli("apply", str(folder / "plan.yaml"), "-o", str(folder / "checkpoint"))
    cli("export", str(folder / "checkpoint"), "--target", "ort", "-o", str(folder / "export"))
    recipe = yaml.safe_load((folder / "plan.yaml").read_text())
    return folder / "export" / "model.onnx", recipe


def float_file(model: nn.Module, path: Path) -> Path:
    import onnx

    from compress.export.onnx_qdq import float_onnx

    onnx.save(float_onnx(model.eval(), (torch.zeros(1, 1, 28, 28),)), path)
    return path


def accuracy(path: Path) -> float:
    from compress.backends.ort.session import ort_session
    from compress.data.spec import load_data

    heldout = load_data(DATA, "heldout", "heldout")
    session = ort_session(path)
    name = session.get_inputs()[0].name
    correct = sum(int((session.run(None, {name: b.inputs[0].numpy()})[0].argmax(1) == b.targets.numpy()).sum())
                  for b in heldout.batches(250))
    return correct / len(heldout)


def calibration_arrays() -> list:
    from compress.data.spec import load_data

    train = load_data(DATA, "train", "train")
    return [b.inputs[0].numpy() for b in train.batches(256)][: CALIBRATION // 256]


def case(name: str, spec: str, folder: Path) -> dict[str, Path | dict]:
    from compress.models.spec import build_model
    from ort_speed import ort_static

    fp32 = float_file(build_model(spec), folder / f"{name}-fp32.onnx")
    static = ort_static(fp32, calibration_arrays(), folder / f"{name}-quantize_static.onnx")
    ours8, recipe8 = natural_path(spec, 8, folder / f"{name}-avg8")
    ours4, recipe4 = natural_path(spec, 4, folder / f"{name}-avg4")
    return {"files": {"fp32": fp32, "ours avg_bits=8": ours8, "quantize_static": static, "ours avg_bits=4": ours4},
            "plans": {"avg_bits=8": _plan_summary(recipe8), "avg_bits=4": _plan_summary(recipe4)}}


def _plan_summary(recipe: dict) -> dict:
    return {"layers": recipe["quantization"]["layers"], "speed_checked": recipe["plan"].get("speed_checked")}


def main(argv: list[str] | None = None) -> dict:
    from compress.backends.ort.latency import LatencySpec, measure_latency
    from compress.jsonio import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--runs", type=int, default=300, help="timed runs per model and batch size (>= 30)")
    parser.add_argument("--work", type=Path, help="keep the plans, checkpoints and exports here (and reuse "
                        "the exports found there)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.work or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        cases = {name: case(name, spec, folder) for name, spec in MODELS.items()}
        files = {f"{name}: {kind}": path for name, c in cases.items() for kind, path in c["files"].items()}
        timing = measure_latency({k: str(p) for k, p in files.items()},
                                 LatencySpec(batch_sizes=BATCHES, runs=args.runs, warmup=20))
        results = {}
        for name, c in cases.items():
            rows = {}
            for kind, path in c["files"].items():
                ms = {b: timing.get(f"{name}: {kind}", b).median_ms for b in BATCHES}
                base = {b: timing.get(f"{name}: fp32", b).median_ms for b in BATCHES}
                rows[kind] = {"median_ms": ms, "speedup_vs_fp32": {b: base[b] / ms[b] for b in BATCHES},
                              "accuracy": accuracy(path), "file_bytes": path.stat().st_size}
            rows["ours avg_bits=4"]["file_vs_fp32"] = rows["ours avg_bits=4"]["file_bytes"] / rows["fp32"]["file_bytes"]
            results[name] = {"models": rows, "plans": c["plans"]}
    print(json.dumps(results, indent=1, default=str))
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
