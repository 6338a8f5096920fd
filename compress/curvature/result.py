"""The curvature stage's result, serialisable to JSON (the ``--json`` contract of DESIGN §2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LayerCurvature:
    """Trace of the Hessian block of one module's parameters (weight and bias)."""

    trace: float
    trace_stderr: float  # total: √(probe² + data²)
    num_params: int
    num_probes: int
    trace_stderr_probe: float = 0.0  # from the finite number of probes
    trace_stderr_data: float = 0.0  # from a random subset standing for the whole given data


@dataclass(frozen=True)
class Curvature:
    layers: dict[str, LayerCurvature]
    trace: float
    trace_stderr: float
    top_eigenvalues: list[float]
    num_hvps: int
    seconds: float
    loss: str
    loss_value: float
    method: str
    converged: bool  # every layer reached the requested relative error
    trace_stderr_probe: float = 0.0
    trace_stderr_data: float = 0.0
    num_samples: int = 0  # samples the figures were computed on
    population: int = 0  # samples in the given data (the figures are about all of them)
    density_nodes: list[float] = field(default_factory=list)
    density_weights: list[float] = field(default_factory=list)
    degeneracy_ratio: float = 0.0
    negative_mass: float = 0.0
    version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(payload: dict) -> "Curvature":
        layers = {name: LayerCurvature(**layer) for name, layer in payload["layers"].items()}
        return Curvature(**{**payload, "layers": layers})
