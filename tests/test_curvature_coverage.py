"""The reported 95% bar covers the exact full-data trace: probe part alone (all data) and probe
plus data part (a random subset), over seeded runs, against dense float64 Hessians."""

import pytest
import torch

from compress.curvature.estimate import CurvatureSpec, estimate_curvature
from compress.curvature.trace import Z95, TraceSpec
from compress.testing.tiny import tiny_data, tiny_mlp, trained

SEEDS = range(20)


@pytest.fixture(scope="module")
def model_data_exact():
    data = tiny_data("mlp", num_samples=240)
    model = trained(tiny_mlp(), data)
    return model, data, estimate_curvature(model, data, CurvatureSpec(exact=True))


def coverage(model, data, exact, spec: CurvatureSpec) -> tuple[float, list]:
    """Share of (seed, layer) pairs whose bar holds the exact value, and the runs."""
    hits, runs = [], []
    for seed in SEEDS:
        trace = TraceSpec(**{**spec.trace.__dict__, "seed": seed})
        result = estimate_curvature(model, data, CurvatureSpec(**{**spec.__dict__, "trace": trace}))
        runs.append(result)
        hits += [abs(layer.trace - exact.layers[name].trace) <= Z95 * layer.trace_stderr
                 for name, layer in result.layers.items()]
    return sum(hits) / len(hits), runs


def test_probe_bar_covers_exact_over_all_data(model_data_exact) -> None:
    model, data, exact = model_data_exact
    spec = CurvatureSpec(slq_runs=0, trace=TraceSpec(deflation_steps=0, max_products=32, rel_error=1e-3))
    share, runs = coverage(model, data, exact, spec)
    assert share >= 0.9, share
    assert all(r.num_samples == len(data) and r.trace_stderr_data == 0 for r in runs)
    assert all(layer.trace_stderr == layer.trace_stderr_probe > 0 for r in runs for layer in r.layers.values())


def test_subsample_bar_adds_data_part_and_covers_exact(model_data_exact) -> None:
    model, data, exact = model_data_exact
    spec = CurvatureSpec(max_samples=64, slq_runs=0, trace=TraceSpec(deflation_steps=8, max_products=24))
    share, runs = coverage(model, data, exact, spec)
    assert share >= 0.9, share
    first = runs[0]
    assert first.num_samples == 64 and first.population == len(data)
    for layer in first.layers.values():
        assert layer.trace_stderr_data > 0
        assert layer.trace_stderr ** 2 == pytest.approx(layer.trace_stderr_probe ** 2 + layer.trace_stderr_data ** 2)
    # the probe part alone would not cover: the subset's exact trace differs from the whole data's
    probe_only = [abs(l.trace - exact.layers[n].trace) <= Z95 * l.trace_stderr_probe
                  for r in runs for n, l in r.layers.items()]
    assert sum(probe_only) / len(probe_only) < 0.9


def test_subsets_differ_by_seed_and_default_uses_all(model_data_exact) -> None:
    model, data, _ = model_data_exact
    spec = CurvatureSpec(slq_runs=0, trace=TraceSpec(deflation_steps=0, max_products=2))
    assert estimate_curvature(model, data, spec).num_samples == len(data)
    a, b = (estimate_curvature(model, data, CurvatureSpec(max_samples=64, slq_runs=0,
                                                          trace=TraceSpec(seed=s, deflation_steps=4, max_products=8)))
            for s in (0, 1))
    assert a.trace != b.trace and torch.isfinite(torch.tensor(a.trace_stderr_data))
