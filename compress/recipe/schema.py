"""The recipe schema, version 1 (DESIGN §3).

    version: 1
    model:        {spec: MODEL, weights: PATH | null}
    data:         {calibration: DATA, train: DATA | null, eval: DATA | null, calibration_samples: N}
    quantization: {layers: RULES of QuantSettings keys}     (rules.py: default / name / re:REGEX)
    pruning:      {layers: RULES of PruneSettings keys, saliency: fisher | empirical-fisher | hutchinson}
    finetune:     FinetuneSpec keys, or null for none
    export:       {targets: [onnx | ort | tensorrt], batch_sizes: [N, ...]}
    plan:         what ``compress plan`` recorded (free-form mapping)

Allowed values come from the stage configs themselves (``QuantSettings``, ``PruneSettings``,
``FinetuneSpec`` validate their fields), so the schema never disagrees with what apply accepts.
Training and evaluation data default to the calibration data; builtin data sets use their train
split for calibration and training and their held-out split for evaluation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from compress.errors import UserError
from compress.finetune.spec import FinetuneSpec
from compress.prune.records import PruneSettings
from compress.quant.records import QuantSettings
from compress.recipe.problems import Problems
from compress.recipe.rules import PATTERN, resolve_all

VERSION = 1
TARGETS = ("onnx", "ort", "tensorrt")
SALIENCY = ("fisher", "empirical-fisher", "hutchinson")
SECTIONS = ("version", "model", "data", "quantization", "pruning", "finetune", "export", "plan")


@dataclass(frozen=True)
class Recipe:
    model: dict  # spec, weights
    data: dict  # calibration, train, eval, calibration_samples
    quantization: dict[str, dict | None] = field(default_factory=dict)  # rules
    pruning: dict[str, dict | None] = field(default_factory=dict)  # rules
    saliency: str = "fisher"
    finetune: dict | None = None
    export: dict = field(default_factory=lambda: {"targets": ["ort"], "batch_sizes": [1]})
    plan: dict | None = None
    version: int = VERSION

    def quant_settings(self, layers: list[str]) -> dict[str, QuantSettings]:
        return {n: QuantSettings(**s) for n, s in resolve_all(self.quantization, layers).items()}

    def prune_settings(self, layers: list[str]) -> dict[str, PruneSettings]:
        return {n: PruneSettings(**s) for n, s in resolve_all(self.pruning, layers).items() if s.get("ratio", 0) > 0}

    def finetune_spec(self) -> FinetuneSpec | None:
        return None if self.finetune is None else FinetuneSpec(**self.finetune)

    def to_dict(self) -> dict[str, object]:
        payload = asdict(self)
        result = {"version": payload["version"], "model": payload["model"], "data": payload["data"],
                  "quantization": {"layers": payload["quantization"]},
                  "pruning": {"layers": payload["pruning"], "saliency": payload["saliency"]},
                  "finetune": payload["finetune"], "export": payload["export"]}
        return result if self.plan is None else {**result, "plan": payload["plan"]}


def parse_recipe(payload: object, source: str) -> Recipe:
    """The recipe in ``payload`` (parsed YAML), or one UserError listing every problem."""
    problems = Problems()
    if not isinstance(payload, dict):
        raise UserError(f"{source}: a recipe is a mapping with keys {', '.join(SECTIONS)}; got {type(payload).__name__}")
    problems.unknown_keys("", payload, SECTIONS)
    if payload.get("version") != VERSION:
        problems.add("version", f"{payload.get('version')!r} is not supported (allowed: {VERSION})")
    model = _section(payload, "model", ("spec", "weights"), problems, required=("spec",))
    data = _section(payload, "data", ("calibration", "train", "eval", "calibration_samples"), problems,
                    required=("calibration",))
    _check_strings(model, "model", ("spec", "weights"), problems)
    _check_strings(data, "data", ("calibration", "train", "eval"), problems)
    samples = data.setdefault("calibration_samples", 512)
    if not (isinstance(samples, int) and not isinstance(samples, bool) and samples >= 1):
        problems.add("data.calibration_samples", f"{samples!r} is not allowed (allowed: an integer >= 1)")
    quant = _section(payload, "quantization", ("layers",), problems)
    prune = _section(payload, "pruning", ("layers", "saliency"), problems)
    quant_rules = _rules(quant.get("layers", {}), "quantization.layers", QuantSettings, problems)
    prune_rules = _rules(prune.get("layers", {}), "pruning.layers", PruneSettings, problems)
    saliency = prune.get("saliency", "fisher")
    if saliency not in SALIENCY:
        problems.add("pruning.saliency", f"{saliency!r} is not allowed (allowed: {', '.join(SALIENCY)})")
    finetune = _finetune(payload.get("finetune"), problems)
    export = _export(payload.get("export"), problems)
    _check_targets(quant_rules, export, problems)
    plan = payload.get("plan")
    if plan is not None and not isinstance(plan, dict):
        problems.add("plan", f"{type(plan).__name__} is not allowed (allowed: a mapping)")
    problems.raise_if_any(source)
    return Recipe(model, data, quant_rules, prune_rules, saliency, finetune, export, plan)


def _section(payload: dict, name: str, keys: tuple[str, ...], problems: Problems,
             required: tuple[str, ...] = ()) -> dict:
    value = payload.get(name)
    if value is None:
        for key in required:
            problems.add(f"{name}.{key}", "missing (required)")
        return {}
    if not isinstance(value, dict):
        problems.add(name, f"{type(value).__name__} is not allowed (allowed: a mapping with keys {', '.join(keys)})")
        return {}
    problems.unknown_keys(name, value, keys)
    for key in required:
        if key not in value:
            problems.add(f"{name}.{key}", "missing (required)")
    return {k: v for k, v in value.items() if k in keys}


def _check_strings(section: dict, name: str, keys: tuple[str, ...], problems: Problems) -> None:
    for key in keys:
        if section.get(key) is not None and not isinstance(section[key], str):
            problems.add(f"{name}.{key}", f"{section[key]!r} is not allowed (allowed: a spec string)")


def _rules(rules: object, path: str, config: type, problems: Problems) -> dict[str, dict | None]:
    """Validated rule table: every key a name, ``default`` or a valid ``re:`` pattern; every value
    null or a mapping of the config's fields, each value one the config accepts."""
    import re

    if not isinstance(rules, dict):
        problems.add(path, f"{type(rules).__name__} is not allowed (allowed: a mapping of layer rules)")
        return {}
    allowed = tuple(f.name for f in fields(config))
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
            problems.add(where, f"{rule!r} is not allowed (allowed: null or a mapping of {', '.join(allowed)})")
            continue
        result[str(key)] = rule
        for name, value in (rule or {}).items():
            if name not in allowed:
                problems.add(f"{where}.{name}", f"unknown key (allowed: {', '.join(allowed)})")
            else:
                _check_value(config, name, value, f"{where}.{name}", problems)
        if rule and len(problems.items) == before:
            default = rules.get("default") if key != "default" and isinstance(rules.get("default"), dict) else None
            _check_rule(config, rule, default, where, problems)
    return result


def _check_value(config: type, name: str, value: object, where: str, problems: Problems) -> None:
    """Ask the config itself: build it with only this field set, the others at their defaults or
    at the context the field needs (``_companions``). Combinations: ``_check_rule`` and, per layer
    of the model, ``check.py``."""
    try:
        config(**{**_companions(config, name), name: value})
    except UserError as exc:
        problems.add(where, _without_spec_prefix(str(exc)))
    except (TypeError, ValueError):
        problems.add(where, f"{value!r} has the wrong type")


def _companions(config: type, name: str) -> dict:
    """The other fields a field needs to be judged alone (its legal context)."""
    if config is PruneSettings:
        return {"ratio": 0.5, **({"pattern": "channel"} if name == "round_to" else {})}
    if config is QuantSettings:
        return {"weight_block": {"act_bits": None}, "act_dynamic": {"act_signed": False}}.get(name, {})
    return {}


def _check_rule(config: type, rule: dict, default: dict | None, where: str, problems: Problems) -> None:
    """The rule's fields together (over the default's): combinations the config refuses."""
    base = {"ratio": 0.5} if config is PruneSettings else {}
    try:
        config(**{**base, **(default or {}), **rule})
    except UserError as exc:
        if default and not _builds(config, {**base, **default}):
            return  # the default's own problem, reported at the default
        problems.add(where, f"this combination is not allowed: {exc}")


def _builds(config: type, values: dict) -> bool:
    try:
        config(**values)
    except (UserError, TypeError, ValueError):
        return False
    return True


def _without_spec_prefix(message: str) -> str:
    return message.split(": ", 1)[1] if message.startswith("invalid finetune spec: ") else message


def _finetune(section: object, problems: Problems) -> dict | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        problems.add("finetune", f"{section!r} is not allowed (allowed: null or a mapping)")
        return None
    allowed = tuple(f.name for f in fields(FinetuneSpec))
    for name, value in section.items():
        if name not in allowed:
            problems.add(f"finetune.{name}", f"unknown key (allowed: {', '.join(allowed)})")
        else:
            _check_value(FinetuneSpec, name, value, f"finetune.{name}", problems)
    return dict(section)


def _export(section: object, problems: Problems) -> dict:
    section = {"targets": ["ort"], "batch_sizes": [1]} if section is None else section
    if not isinstance(section, dict):
        problems.add("export", f"{section!r} is not allowed (allowed: a mapping with targets, batch_sizes)")
        return {"targets": [], "batch_sizes": [1]}
    problems.unknown_keys("export", section, ("targets", "batch_sizes"))
    targets = section.get("targets", ["ort"])
    if not isinstance(targets, list) or not all(t in TARGETS for t in targets):
        problems.add("export.targets", f"{targets!r} is not allowed (allowed: a list of {', '.join(TARGETS)})")
    sizes = section.get("batch_sizes", [1])
    if not isinstance(sizes, list) or not sizes or not all(isinstance(b, int) and b >= 1 for b in sizes):
        problems.add("export.batch_sizes", f"{sizes!r} is not allowed (allowed: a list of integers >= 1)")
    return {"targets": targets, "batch_sizes": sizes}


def _check_targets(quant_rules: dict[str, dict | None], export: dict, problems: Problems) -> None:
    """Asymmetric (uint8) activations are ORT-only: TensorRT needs zero points of 0."""
    if "tensorrt" not in (export.get("targets") or []):
        return
    for key, rule in quant_rules.items():
        if rule and rule.get("act_signed") is False:
            problems.add(f"quantization.layers.{key}.act_signed",
                         "false is not allowed with the tensorrt target (TensorRT needs symmetric int8)")


def load_recipe(path: str) -> Recipe:
    """Read and validate a recipe file (``yaml.safe_load`` only)."""
    import yaml

    try:
        text = open(path, encoding="utf-8").read()
    except OSError as exc:
        raise UserError(f"cannot read recipe {path}: {exc.strerror}") from None
    try:
        payload = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_recipe(payload, path)

