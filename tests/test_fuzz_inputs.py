"""Fuzzing harness (hypothesis): generated bad inputs through the CLI, in-process. Every case must
end in exit 0, a one-line ``error:`` with exit 2, or argparse's usage error (exit 2); never an
internal error or a traceback. 650 cases by default. ``FUZZ_SCALE`` multiplies the number of cases (the long run in
``benchmarks/README.md`` uses 20)."""

from __future__ import annotations

import contextlib
import io
import math
import os
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from compress.cli.main import main

SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

FACTORIES = '''
import torch
from torch import nn

PAYLOAD = {payload!r}

def data():
    return torch.load(PAYLOAD, weights_only=False)

def model():
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()

def conv():
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.LazyLinear(3)).eval()

class Head(nn.Module):
    """model() with its output passed through ``how``: class indices, one number, a detached copy."""
    def __init__(self, how):
        super().__init__()
        self.inner, self.how = model(), how
    def forward(self, x):
        return self.how(self.inner(x))

def argmax():
    return Head(lambda y: y.argmax(dim=-1)).eval()

def scalar():
    return Head(lambda y: y[..., 0]).eval()

def detached():
    return Head(lambda y: y.detach()).eval()

def not_a_model():
    return 42

def raises():
    raise ValueError("broken factory")
'''

MODELS = ("model", "conv", "argmax", "scalar", "detached", "not_a_model", "raises", "missing")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8, torch.bool)
FITTING = ((6,), (2, 3), (2, 3, 3))  # per-example input shapes model() / conv() take
SPECIAL = (0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e30)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr) of ``compress argv``, argparse's SystemExit included."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
            assert code in (0, 2), err.getvalue()
            return code, ""
    return code, err.getvalue()


def assert_clean(argv: list[str]) -> None:
    code, err = run_cli(argv)
    assert "internal error" not in err and "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2 and err:  # one line; a ConfigError lists its problems beneath it, indented
        first, *problems = err.strip().splitlines()
        assert ": error: " in first and all(line.startswith("  ") for line in problems), (argv, err)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "factories.py").write_text(FACTORIES.format(payload=str(folder / "payload.pt")))
    return folder


@st.composite
def tensors(draw: st.DrawFn, rows: int | None = None) -> torch.Tensor:
    """Small tensors of any dtype and rank, with special values sprinkled in; inputs (``rows``
    not given) take a shape the models accept half of the time, so that their outputs are reached."""
    fitting = rows is None and draw(st.booleans())
    rows = draw(st.integers(0, 9)) if rows is None else rows
    trailing = draw(st.sampled_from(FITTING) if fitting else st.lists(st.integers(0, 7), max_size=3))
    shape = (rows, *trailing)
    dtype = draw(st.sampled_from(DTYPES[:2] if fitting else DTYPES))
    values = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    if shape and math.prod(shape) and draw(st.booleans()):
        values.view(-1)[draw(st.integers(0, math.prod(shape) - 1))] = draw(st.sampled_from(SPECIAL))
    if dtype.is_floating_point:
        return values.to(dtype)
    return (values.nan_to_num() * 3).clamp(-5, 8).to(dtype)


@st.composite
def payloads(draw: st.DrawFn) -> object:
    """What a data factory returns: mostly (inputs, targets) tensors, sometimes anything."""
    inputs = draw(tensors())
    kind = draw(st.sampled_from(("pair", "pair", "pair", "inputs", "tuple-inputs", "junk", "dataset")))
    if kind == "inputs":
        return inputs
    if kind == "tuple-inputs":
        return ((inputs, inputs), None)
    if kind == "junk":
        return draw(st.sampled_from((None, 3, "text", [], {}, (1, 2, 3), [inputs])))
    targets = draw(st.one_of(st.none(), tensors(rows=len(inputs) if draw(st.booleans()) else None)))
    if kind == "dataset" and targets is not None and len(targets) == len(inputs):
        return torch.utils.data.TensorDataset(inputs, targets)
    return (inputs, targets)


@settings(FUZZ, max_examples=200 * SCALE)
@given(payload=payloads(), model=st.sampled_from(MODELS), verb=st.sampled_from(("eval", "compare", "curvature")))
def test_generated_data_and_models(workdir: Path, payload: object, model: str, verb: str) -> None:
    """eval scores labels; compare: eval against the good model (data without labels); curvature."""
    torch.save(payload, workdir / "payload.pt")
    factories = workdir / "factories.py"
    extra = {"eval": [], "compare": ["--reference", f"{factories}:model"],
             "curvature": ["--max-products", "2", "--max-seconds", "5", "--slq-runs", "1", "--top-k", "1"]}[verb]
    assert_clean(["curvature" if verb == "curvature" else "eval", f"{factories}:{model}", "--data", f"{factories}:data",
                  *extra])


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True),
                    st.text(max_size=6), st.lists(st.integers(-2, 9), max_size=3))
KEYS = st.sampled_from(("version", "model", "data", "quantization", "pruning", "finetune", "saliency", "spec",
                        "calibration", "bits", "weight_bits", "act_bits", "sparsity", "layers", "default", "x"))
RECIPES = st.recursive(SCALARS, lambda inner: st.dictionaries(KEYS, inner, max_size=4), max_leaves=12)


@settings(FUZZ, max_examples=250 * SCALE)
@given(recipe=RECIPES)
def test_generated_recipes(workdir: Path, recipe: object) -> None:
    path = workdir / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert_clean(["validate", "--no-model", str(path)])


SPEC_TEXT = st.text(st.sampled_from("ab-_.:/\\ é0\x00*~"), max_size=12)


@st.composite
def specs(draw: st.DrawFn, folder: Path) -> str:
    """Model or data spec strings of every form, mostly broken: unknown names, missing files and
    factories, folders, odd characters (a NUL byte among them)."""
    prefix = draw(st.sampled_from(("builtin:", "torchvision:", "hf:", "", f"{folder / 'factories.py'}:",
                                   f"{folder / 'missing.py'}:", f"{folder}/", "/nonexistent/", f"{folder}")))
    spec = prefix + draw(SPEC_TEXT)
    assume(not Path(spec).is_dir() or Path(spec).resolve().is_relative_to(folder))  # no scan of "/" or "."
    return spec


@settings(FUZZ, max_examples=100 * SCALE)
@given(data=st.data(), which=st.sampled_from(("model", "data")))
def test_generated_model_and_data_specs(workdir: Path, data: st.DataObject, which: str) -> None:
    torch.save((torch.randn(6, 6), torch.arange(6) % 3), workdir / "payload.pt")
    spec = data.draw(specs(workdir))
    good = {"model": f"{workdir / 'factories.py'}:model", "data": f"{workdir / 'factories.py'}:data"}
    assert_clean(["eval", spec if which == "model" else good["model"], "--data", spec if which == "data" else good["data"]])


BUDGETS = st.sampled_from(("avg_bits", "size_mb", "latency_ms", "sparsity", "macs", "bits", ""))
BAD_NUMBERS = st.one_of(st.sampled_from(("nan", "inf", "-inf", "-1", "0", "", "abc", "1e400", "-0")),
                        st.floats(max_value=0, allow_nan=False).map(repr))


@settings(FUZZ, max_examples=100 * SCALE)
@given(name=BUDGETS, value=BAD_NUMBERS, extra=st.lists(st.sampled_from(
    ("--verify", "--threads", "--latency-batch", "--max-samples", "--batch-size", "--sweep", "--bits")), max_size=2))
def test_generated_bad_budgets_and_flags(workdir: Path, name: str, value: str, extra: list[str]) -> None:
    flags = [part for flag in extra for part in (flag, value)]
    assert_clean(["plan", f"{workdir / 'factories.py'}:model", "--data", f"{workdir / 'factories.py'}:data",
                  "--budget", f"{name}={value}", *flags, "-o", str(workdir / "plan.yaml"), "--force"])
