"""The fine-tuning stage's config (``FinetuneSpec``) and result (``FinetuneResult``).

Modes: ``qat`` trains on the task loss (cross-entropy, needs labels); ``kd`` on the distillation
loss against a teacher; ``qat+kd`` on (1 − kd_weight)·task + kd_weight·KD (Hinton et al. 2015),
or on KD alone when the data has no labels.

Intermediate-layer (feature) distillation, ``kd_layers``: ``none`` (the default: the model's output
only), ``blocks`` (the output of every repeated block: the entries of the model's outermost
``nn.ModuleList`` containers, e.g. a transformer's layers) or a list of module names (any modules
whose outputs have the same shape in teacher and student, e.g. compressed Linear/Conv2d layers).
Their loss (``compress.finetune.losses.feature_distillation``) is added to the KD loss with weight
``kd_layers_weight``; it needs a teacher (mode kd or qat+kd).

``dropout``: true (the default) trains with the model's dropout active; false keeps every dropout
module of the student in eval mode, so the student is trained as it is evaluated (recovery by KD
on little data matches a deterministic teacher; dropout adds noise to that target, measured in
benchmarks/README.md, low-rank KD section).

``local_steps``: before the end-to-end run, each ``kd_layers`` module of the student is trained for
that many steps alone, on the teacher's input to the same module, to match the teacher module's
output (``compress.finetune.local``); 0 (the default) skips this phase.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from compress.errors import ConfigError

MODES = ("qat", "kd", "qat+kd")
OPTIMIZERS = ("sgd", "adamw")
KD_LOSSES = ("logits", "cosine", "mse")
KD_LAYER_CHOICES = ("none", "blocks")


@dataclass(frozen=True)
class FinetuneSpec:
    """How to fine-tune; ``lr="auto"`` derives the step size from the sharpness λ_max (see
    ``compress.finetune.sharpness``); ``sharpness_every=0`` turns tracking off."""

    mode: str = "qat+kd"
    epochs: int = 1
    max_steps: int | None = None  # stop after this many steps if the epochs take more
    lr: float | str = "auto"
    optimizer: str = "sgd"
    momentum: float = 0.9  # heavy-ball β for sgd, β₁ for adamw
    batch_size: int = 64
    checkpoint_every: int = 100  # steps
    kd_loss: str = "logits"
    temperature: float = 4.0
    kd_weight: float = 0.5
    sharpness_every: int = 50  # steps; 0 = no tracking
    seed: int = 0
    kd_layers: str | tuple[str, ...] = "none"  # none | blocks | module names (module docstring)
    kd_layers_weight: float = 1.0
    dropout: bool = True  # false: the student's dropout layers stay in eval mode while it trains
    local_steps: int = 0  # block-local distillation steps per kd_layers module before the run (local.py)

    def __post_init__(self) -> None:
        if isinstance(self.kd_layers, list):  # YAML and JSON give lists; the spec is frozen and hashable
            object.__setattr__(self, "kd_layers", tuple(self.kd_layers))
        problems = [f"{name}: {why}" for name, why in self._problems()]
        if problems:
            raise ConfigError("invalid finetune spec: " + "; ".join(problems))

    def _problems(self) -> list[tuple[str, str]]:
        checks = [
            ("mode", self.mode in MODES, f"{self.mode!r} is not one of {', '.join(MODES)}"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"{self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}"),
            ("kd_loss", self.kd_loss in KD_LOSSES, f"{self.kd_loss!r} is not one of {', '.join(KD_LOSSES)}"),
            ("epochs", _is_int(self.epochs) and self.epochs >= 1, f"{self.epochs!r} must be an integer >= 1"),
            ("max_steps", self.max_steps is None or (_is_int(self.max_steps) and self.max_steps >= 1),
             f"{self.max_steps!r} must be null or an integer >= 1"),
            ("lr", self.lr == "auto" or (_is_number(self.lr) and self.lr > 0), f"{self.lr!r} must be 'auto' or > 0"),
            ("momentum", _is_number(self.momentum) and 0 <= self.momentum < 1, f"{self.momentum!r} must be in [0, 1)"),
            ("batch_size", _is_int(self.batch_size) and self.batch_size >= 1, f"{self.batch_size!r} must be >= 1"),
            ("checkpoint_every", _is_int(self.checkpoint_every) and self.checkpoint_every >= 1,
             f"{self.checkpoint_every!r} must be >= 1"),
            ("temperature", _is_number(self.temperature) and self.temperature > 0, f"{self.temperature!r} must be > 0"),
            ("kd_weight", _is_number(self.kd_weight) and 0 <= self.kd_weight <= 1,
             f"{self.kd_weight!r} must be in [0, 1]"),
            ("sharpness_every", _is_int(self.sharpness_every) and self.sharpness_every >= 0,
             f"{self.sharpness_every!r} must be an integer >= 0"),
            ("seed", _is_int(self.seed), f"{self.seed!r} must be an integer"),
            ("kd_layers", _is_layer_choice(self.kd_layers),
             f"{self._layers_shown()!r} must be none, blocks or a non-empty list of distinct module names"),
            ("kd_layers", self.kd_layers == "none" or self.mode != "qat",
             f"{self._layers_shown()!r} must be none with mode qat (feature distillation needs a teacher)"),
            ("kd_layers_weight", _is_number(self.kd_layers_weight) and self.kd_layers_weight > 0,
             f"{self.kd_layers_weight!r} must be > 0"),
            ("dropout", isinstance(self.dropout, bool), f"{self.dropout!r} must be true or false"),
            ("local_steps", _is_int(self.local_steps) and self.local_steps >= 0,
             f"{self.local_steps!r} must be an integer >= 0"),
            ("local_steps", not self.local_steps or self.kd_layers != "none",
             f"{self.local_steps!r} must be 0 with kd_layers none (the local phase trains the kd_layers modules)"),
            ("local_steps", not self.local_steps or self.mode != "qat",
             f"{self.local_steps!r} must be 0 with mode qat (the local phase distils from a teacher)"),
            ("local_steps", not self.local_steps or self.lr != "auto",
             f"{self.local_steps!r} must be 0 with lr auto (the local phase runs at a given lr)"),
        ]
        return [(name, why) for name, ok, why in checks if not ok]

    def _layers_shown(self) -> object:
        """kd_layers as the recipe spells it (a list, not the tuple it is kept as)."""
        return list(self.kd_layers) if isinstance(self.kd_layers, tuple) else self.kd_layers

    @property
    def uses_teacher(self) -> bool:
        return self.mode != "qat"

    @property
    def uses_features(self) -> bool:
        return self.kd_layers != "none"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "kd_layers": self._layers_shown()}

    @staticmethod
    def from_dict(payload: dict) -> FinetuneSpec:
        unknown = sorted(set(payload) - {f.name for f in fields(FinetuneSpec)})
        if unknown:
            raise ConfigError(f"invalid finetune spec: unknown keys {', '.join(unknown)}")
        return FinetuneSpec(**payload)


@dataclass(frozen=True)
class SharpnessPoint:
    """λ_max of the training loss at ``step`` (preconditioned by Adam's second moments for
    adamw), the learning rate then, and the stability limit it implies."""

    step: int
    sharpness: float
    lr: float
    stable_lr: float


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run did: steps, learning rate and where it came from, the per-step
    training loss (mean over the global batch), the sharpness history."""

    steps: int
    epochs_run: float
    lr: float
    lr_source: str  # "auto" (from initial_sharpness) or "given"
    initial_sharpness: float | None  # λ_max over the first few batches, used for lr="auto"
    sharpness_history: tuple[SharpnessPoint, ...]
    losses: tuple[float, ...]
    resumed_from_step: int | None
    world_size: int
    seconds: float  # this process's wall time, sharpness measurements included
    sharpness_seconds: float  # of which measuring λ_max (initial and tracking)
    local_losses: tuple[float, ...] = ()  # the block-local phase's per-step losses, module after module

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(payload: dict) -> FinetuneResult:
        history = tuple(SharpnessPoint(**point) for point in payload["sharpness_history"])
        return FinetuneResult(**{**payload, "sharpness_history": history, "losses": tuple(payload["losses"]),
                                 "local_losses": tuple(payload.get("local_losses", ()))})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_layer_choice(value: object) -> bool:
    if isinstance(value, str):
        return value in KD_LAYER_CHOICES
    names = value if isinstance(value, tuple) else ()
    return bool(names) and all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
