"""The recipe schema, version 1 (DESIGN §3).

    version: 1
    model:        {spec: MODEL, weights: PATH | null, task: causal-lm | sequence-classification | embedding | null}
    data:         {calibration: DATA, train: DATA | null, eval: DATA | null, calibration_samples: N = 512,
                   seq_len: N | null (tokens per block of causal-LM text data)}
    quantization: {layers: RULES of QuantSettings keys}     (rules.py: default / name / re:REGEX)
    pruning:      {layers: RULES of PruneSettings keys, saliency: fisher | empirical-fisher | hutchinson}
    lowrank:      {layers: RULES of LowRankSettings keys}   (rank or rank_ratio = share of weights kept)
    finetune:     FinetuneSpec keys (mode: qat | kd | qat+kd), or null / {mode: none} for none
    export:       {targets: [onnx | ort | tensorrt] = [ort], batch_sizes: [N, ...] = [1]}
    plan:         what ``compress plan`` recorded (free-form mapping)

Allowed values come from the stage configs themselves (``QuantSettings``, ``PruneSettings``,
``LowRankSettings``, ``FinetuneSpec`` validate their fields; ``fields.py``), so the schema never disagrees with what
apply accepts. Training and evaluation data default to the calibration data; builtin data sets use
their train split for calibration and training and their held-out split for evaluation.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from compress.errors import ConfigError
from compress.finetune.spec import MODES, FinetuneSpec
from compress.lowrank.settings import RANK_CHOICE, LowRankSettings
from compress.models.tasks import TASKS
from compress.prune.records import PruneSettings
from compress.quant.records import QuantSettings
from compress.recipe.fields import check_field, check_rule, field_names
from compress.recipe.problems import Problems, yaml_words
from compress.recipe.rules import DEFAULT, PATTERN, resolve_all
from compress.vocab.targets import EXPORT_TARGETS as TARGETS

VERSION = 1
SALIENCY = ("fisher", "empirical-fisher", "hutchinson")
SECTIONS = ("version", "model", "data", "quantization", "pruning", "lowrank", "finetune", "export", "plan")
CALIBRATION_SAMPLES = 512
NO_FINETUNE = "none"


@dataclass(frozen=True)
class Recipe:
    """A validated recipe; build it with ``parse_recipe`` / ``from_dict`` / ``load_recipe``."""

    model: dict  # spec, weights, task
    data: dict  # calibration, train, eval, calibration_samples, seq_len
    quantization: dict[str, dict | None] = field(default_factory=dict)  # rules
    pruning: dict[str, dict | None] = field(default_factory=dict)  # rules
    saliency: str = "fisher"
    finetune: dict | None = None
    export: dict = field(default_factory=lambda: {"targets": ["ort"], "batch_sizes": [1]})
    plan: dict | None = None
    version: int = VERSION
    lowrank: dict[str, dict | None] = field(default_factory=dict)  # rules

    def quant_settings(self, layers: list[str]) -> dict[str, QuantSettings]:
        """Each layer's settings; layers left float (weights and activations) are left out."""
        settings = {n: QuantSettings(**s) for n, s in resolve_all(self.quantization, layers).items()}
        return {name: layer for name, layer in settings.items() if not is_float(layer)}

    def prune_settings(self, layers: list[str]) -> dict[str, PruneSettings]:
        return {n: PruneSettings(**s) for n, s in resolve_all(self.pruning, layers).items() if s.get("ratio", 0) > 0}

    def lowrank_settings(self, layers: list[str]) -> dict[str, LowRankSettings]:
        """The layers to factorise (named as in the unfactorised model) and how; a rule naming
        ``rank`` or ``rank_ratio`` replaces both of the default's."""
        return {n: LowRankSettings(**s) for n, s in resolve_all(self.lowrank, layers, RANK_CHOICE).items()}

    def finetune_spec(self) -> FinetuneSpec | None:
        return None if self.finetune is None else FinetuneSpec(**self.finetune)

    def to_dict(self) -> dict[str, object]:
        """The recipe as plain YAML types (a deep copy); ``from_dict`` reads it back equal."""
        result = {"version": self.version, "model": self.model, "data": self.data,
                  "quantization": {"layers": self.quantization},
                  "pruning": {"layers": self.pruning, "saliency": self.saliency},
                  "finetune": self.finetune, "export": self.export}
        if self.lowrank:
            result["lowrank"] = {"layers": self.lowrank}
        return copy.deepcopy(result if self.plan is None else {**result, "plan": self.plan})

    @staticmethod
    def from_dict(payload: object, source: str = "recipe") -> Recipe:
        return parse_recipe(payload, source)


def is_float(settings: QuantSettings) -> bool:
    """``weight_bits: null, act_bits: null``: nothing to quantize (the same as a null rule)."""
    return settings.weight_bits is None and settings.act_bits is None


def parse_recipe(payload: object, source: str) -> Recipe:
    """The recipe in ``payload`` (parsed YAML), or one ConfigError listing every problem."""
    problems = Problems()
    if not isinstance(payload, dict):
        raise ConfigError(f"{source}: a recipe is a mapping with keys {', '.join(SECTIONS)}; "
                        f"got {yaml_words(repr(payload))}")
    problems.unknown_keys("", payload, SECTIONS)
    if payload.get("version") != VERSION:
        problems.add("version", f"{yaml_words(repr(payload.get('version')))} is not supported (allowed: {VERSION})")
    model = _section(payload, "model", ("spec", "weights", "task"), problems, required=("spec",))
    data = _section(payload, "data", ("calibration", "train", "eval", "calibration_samples", "seq_len"), problems,
                    required=("calibration",))
    _check_strings(model, "model", ("spec", "weights"), problems)
    _check_strings(data, "data", ("calibration", "train", "eval"), problems)
    _check_task(model.get("task"), problems)
    samples = data.setdefault("calibration_samples", CALIBRATION_SAMPLES)
    if not _positive_int(samples):
        problems.refuse("data.calibration_samples", samples, "an integer >= 1")
    if data.get("seq_len") is not None and not (_positive_int(data["seq_len"]) and data["seq_len"] >= 2):
        problems.refuse("data.seq_len", data["seq_len"], "null or an integer >= 2")
    quant = _section(payload, "quantization", ("layers",), problems)
    prune = _section(payload, "pruning", ("layers", "saliency"), problems)
    quant_rules = _rules(quant.get("layers", {}), "quantization.layers", QuantSettings, problems)
    prune_rules = _rules(prune.get("layers", {}), "pruning.layers", PruneSettings, problems)
    lowrank = _section(payload, "lowrank", ("layers",), problems)
    lowrank_rules = _rules(lowrank.get("layers", {}), "lowrank.layers", LowRankSettings, problems, RANK_CHOICE)
    saliency = prune.get("saliency", "fisher")
    if saliency not in SALIENCY:
        problems.refuse("pruning.saliency", saliency, ", ".join(SALIENCY))
    finetune = _finetune(payload.get("finetune"), problems)
    export = _export(payload.get("export"), problems)
    _check_targets(quant_rules, export, problems)
    plan = payload.get("plan")
    if plan is not None and not isinstance(plan, dict):
        problems.refuse("plan", plan, "a mapping")
    problems.raise_if_any(source)
    return Recipe(model, data, quant_rules, prune_rules, saliency, finetune, export, plan, lowrank=lowrank_rules)


def _section(payload: dict, name: str, keys: tuple[str, ...], problems: Problems,
             required: tuple[str, ...] = ()) -> dict:
    value = payload.get(name)
    if value is None:
        for key in required:
            problems.add(f"{name}.{key}", "missing (required)")
        return {}
    if not isinstance(value, dict):
        problems.refuse(name, value, f"a mapping with keys {', '.join(keys)}")
        return {}
    problems.unknown_keys(name, value, keys)
    for key in required:
        if key not in value:
            problems.add(f"{name}.{key}", "missing (required)")
    return {k: v for k, v in value.items() if k in keys}


def _check_task(task: object, problems: Problems) -> None:
    if task is not None and task not in TASKS:
        problems.refuse("model.task", task, f"null, {', '.join(TASKS)}")


def _check_strings(section: dict, name: str, keys: tuple[str, ...], problems: Problems) -> None:
    for key in keys:
        if section.get(key) is not None and not isinstance(section[key], str):
            problems.refuse(f"{name}.{key}", section[key], "a spec string")


def _rules(rules: object, path: str, config: type, problems: Problems,
           choice: tuple[str, ...] = ()) -> dict[str, dict | None]:
    """Validated rule table: every key a name, ``default`` or a valid ``re:`` pattern; every value
    null or a mapping of the config's fields, each value one the config accepts (``fields.py``);
    ``choice``: fields a rule replaces together (``rules.over_default``)."""
    if not isinstance(rules, dict):
        problems.refuse(path, rules, "a mapping of layer rules")
        return {}
    allowed = field_names(config)
    default = rules.get(DEFAULT) if isinstance(rules.get(DEFAULT), dict) else None
    result = {}
    for key, rule in rules.items():
        where = f"{path}.{key}"
        before = len(problems.items)
        if str(key).startswith(PATTERN):
            try:
                re.compile(str(key)[len(PATTERN):])
            except re.error as exc:
                problems.add(where, f"invalid regular expression ({exc})")
        if rule is not None and not isinstance(rule, dict):
            problems.refuse(where, rule, f"null or a mapping of {', '.join(allowed)}")
            continue
        result[str(key)] = rule
        problems.unknown_keys(where, rule or {}, allowed)
        for name, value in (rule or {}).items():
            if name in allowed:
                check_field(config, name, value, f"{where}.{name}", problems)
        if rule is not None and len(problems.items) == before:
            check_rule(config, rule, None if key == DEFAULT else default, where, problems, choice)
    return result


def _finetune(section: object, problems: Problems) -> dict | None:
    """FinetuneSpec keys; ``null`` or ``mode: none`` (other keys still checked) means no fine-tuning."""
    if section is None:
        return None
    if not isinstance(section, dict):
        problems.refuse("finetune", section, "null or a mapping")
        return None
    allowed = field_names(FinetuneSpec)
    before = len(problems.items)
    problems.unknown_keys("finetune", section, allowed)
    mode = section.get("mode", FinetuneSpec.mode)
    if mode not in (NO_FINETUNE, *MODES):
        problems.refuse("finetune.mode", mode, f"{NO_FINETUNE}, {', '.join(MODES)}")
    for name, value in section.items():
        if name in allowed and name != "mode":
            check_field(FinetuneSpec, name, value, f"finetune.{name}", problems)
    if mode == NO_FINETUNE:
        return None
    if len(problems.items) == before:
        _check_finetune_combination(section, problems)
    return dict(section)


def _check_finetune_combination(section: dict, problems: Problems) -> None:
    """Fields each legal alone may still clash (kd_layers with mode qat)."""
    try:
        FinetuneSpec(**section)
    except ConfigError as exc:
        problems.add("finetune", "this combination is not allowed: "
                     + yaml_words(str(exc).removeprefix("invalid finetune spec: ")))


def _export(section: object, problems: Problems) -> dict:
    section = {} if section is None else section
    if not isinstance(section, dict):
        problems.refuse("export", section, "a mapping with targets, batch_sizes")
        return {"targets": [], "batch_sizes": [1]}
    problems.unknown_keys("export", section, ("targets", "batch_sizes"))
    targets = section.get("targets", ["ort"])
    if not isinstance(targets, list) or not all(t in TARGETS for t in targets):
        problems.refuse("export.targets", targets, f"a list of {', '.join(TARGETS)}")
        targets = []  # reported; nothing to check the quantization against
    sizes = section.get("batch_sizes", [1])
    if not isinstance(sizes, list) or not sizes or not all(_positive_int(b) for b in sizes):
        problems.refuse("export.batch_sizes", sizes, "a list of integers >= 1")
    return {"targets": targets, "batch_sizes": sizes}


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_targets(quant_rules: dict[str, dict | None], export: dict, problems: Problems) -> None:
    """Asymmetric (uint8) activations and asymmetric weight blocks are ORT-only: TensorRT needs
    zero points of 0."""
    if "tensorrt" not in (export.get("targets") or []):
        return
    for key, rule in quant_rules.items():
        if rule and rule.get("act_signed") is False:
            problems.add(f"quantization.layers.{key}.act_signed",
                         "false is not allowed with the tensorrt target (allowed: true; TensorRT needs "
                         "symmetric int8)")
        if rule and rule.get("symmetric") is False:
            problems.add(f"quantization.layers.{key}.symmetric",
                         "false is not allowed with the tensorrt target (allowed: true; TensorRT needs "
                         "symmetric weights)")


def load_recipe(path: str) -> Recipe:
    """Read (``load.py``: safe, strict YAML) and validate a recipe file."""
    from compress.recipe.load import read_yaml

    return parse_recipe(read_yaml(path), path)
