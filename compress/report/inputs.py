"""What a report shows (``ReportInputs``), as the pipeline's stages produce it; serialisable."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from compress.errors import InputError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Latency:
    """Median and 90th-percentile milliseconds on one backend at one batch size."""

    backend: str
    batch_size: int
    median_ms: float
    p90_ms: float


@dataclass(frozen=True)
class Variant:
    """One version of the model ("fp32", "uniform int8", "plan" …): ``metric`` names what
    ``value`` is (accuracy or mean_cosine)."""

    name: str
    metric: str
    value: float | None
    size_mb: float | None
    latency: tuple[Latency, ...] = ()
    graph_bytes: int | None = None  # the predicted ONNX graph an exported file adds to size_mb
    checkpoint_bytes: int | None = None  # measured: the checkpoint directory evaluated, JSON included


@dataclass(frozen=True)
class LayerRow:
    """A layer's curvature, its planned compression and the loss change predicted (and measured)."""

    name: str
    trace: float | None
    trace_stderr: float | None
    weight_bits: int | None  # None: float
    act_bits: int | None
    sparsity: float
    predicted_delta_loss: float | None
    measured_delta_loss: float | None = None
    rounded_delta_loss: float | None = None  # Ω of the chosen option rounded to nearest / magnitude-masked
    reconstructed_delta_loss: float | None = None  # Ω of it as apply reconstructs it (GPTQ / SparseGPT)


@dataclass(frozen=True)
class Spectrum:
    """Hessian spectral density on a grid (smoothed SLQ) and the top eigenvalues; ``label`` says
    of which matrix (loss, parametrisation: ``compress.report.labels``)."""

    grid: tuple[float, ...]
    density: tuple[float, ...]
    top_eigenvalues: tuple[float, ...]
    label: str = ""


@dataclass(frozen=True)
class SharpnessPoint:
    """λ_max of the fine-tuning loss at ``step``, the learning rate η then and the largest stable
    learning rate for that λ_max (both as fine-tuning recorded them; None in older files)."""

    step: int
    lambda_max: float
    lr: float | None = None
    stable_lr: float | None = None

    @property
    def limit(self) -> float | None:
        """The largest stable λ_max at η: fine-tuning's limit is c/λ (c = 2(1 + β), …), so at η
        it is c/η = λ·stable_lr/η; None where η or the limit was not recorded or is unbounded."""
        if self.lr is None or self.stable_lr is None or not 0 < self.stable_lr < float("inf"):
            return None
        return self.lambda_max * self.stable_lr / self.lr


@dataclass(frozen=True)
class ParityFigures:
    """Exported model vs PyTorch: error in output quantization steps, top-1 agreement."""

    target: str
    max_error_steps: float
    top1_agreement: float | None
    mean_error_steps: float | None = None
    num_examples: int | None = None
    file_bytes: int | None = None  # the exported file on disk
    weight_bytes: int | None = None  # of which initializers (weights, scales, zero points)


@dataclass(frozen=True)
class ReportInputs:
    model: str
    variants: tuple[Variant, ...]
    layers: tuple[LayerRow, ...] = ()
    spectrum: Spectrum | None = None
    sharpness: tuple[SharpnessPoint, ...] = ()
    parity: tuple[ParityFigures, ...] = ()
    sharpness_label: str = ""  # which loss / parametrisation the sharpness is of
    stability_rule: str = ""  # the limit on λ_max at η for the fine-tuning optimizer
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise InputError(f"variant names must be unique, got {names}")
        if self.spectrum is not None and len(self.spectrum.grid) != len(self.spectrum.density):
            raise InputError("the spectrum's grid and density differ in length")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(payload: dict) -> "ReportInputs":
        where = "report inputs"
        variants = tuple(_make(Variant, {**v, "latency": tuple(_make(Latency, x, where) for x in v.get("latency", ()))},
                               where) for v in _get(payload, "variants", where))
        spectrum = payload.get("spectrum")
        if spectrum is not None:
            spectrum = Spectrum(*(tuple(float(x) for x in _get(spectrum, key, where))
                                  for key in ("grid", "density", "top_eigenvalues")), str(spectrum.get("label", "")))
        return _make(ReportInputs, {
            **payload, "variants": variants, "spectrum": spectrum,
            "layers": tuple(_make(LayerRow, row, where) for row in payload.get("layers", ())),
            "sharpness": tuple(_make(SharpnessPoint, p, where) for p in payload.get("sharpness", ())),
            "parity": tuple(_make(ParityFigures, p, where) for p in payload.get("parity", ())),
        }, where)


def _get(payload: dict, key: str, where: str) -> Any:
    if not isinstance(payload, dict) or key not in payload:
        raise InputError(f"{where}: missing key {key!r}")
    return payload[key]


def _make(cls: type, payload: dict, where: str) -> Any:
    """``cls(**payload)`` with unknown or missing keys reported as one-line user errors."""
    if not isinstance(payload, dict):
        raise InputError(f"{where}: expected a mapping for {cls.__name__}, got {type(payload).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(payload) - known)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown} in {cls.__name__}; allowed: {sorted(known)}")
    try:
        return cls(**payload)
    except TypeError as exc:
        raise InputError(f"{where}: {cls.__name__}: {exc}") from exc
