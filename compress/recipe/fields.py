"""Judging one recipe field, or one rule's fields together, by the stage config that will consume
them (``QuantSettings``, ``PruneSettings``, ``LowRankSettings``, ``FinetuneSpec``): the schema never disagrees with what
``compress apply`` accepts.

Two checks per field: its YAML type against the config field's annotation (so ``weight_bits: 4.5``
or ``learnable_scales: "yes"`` are refused before the config's range checks could let them pass),
then its value by building the config with that field alone. Every message reads
``VALUE is not allowed (allowed: ...)`` with YAML spellings (null, true, false).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields

from compress.errors import ConfigError
from compress.lowrank.settings import RANK_CHOICE, LowRankSettings
from compress.prune.records import PruneSettings
from compress.quant.records import QuantSettings
from compress.recipe.problems import Problems, yaml_words
from compress.recipe.rules import over_default

TYPES = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "None": (lambda v: v is None, "null"),
    "tuple[str, ...]": (lambda v: isinstance(v, list), "a list of strings"),
}


def field_names(config: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(config))


def check_field(config: type, name: str, value: object, where: str, problems: Problems) -> None:
    """Add a problem at ``where`` if ``value`` is not a legal ``config.name`` on its own."""
    kinds = [kind.strip() for kind in _annotation(config, name).split("|")]
    if not any(TYPES[kind][0](value) for kind in kinds):
        allowed = " or ".join(TYPES[kind][1] for kind in kinds)
        problems.refuse(where, value, allowed)
        return
    try:
        config(**{**_companions(config, name), name: value})
    except ConfigError as exc:
        problems.add(where, allowed_form(name, str(exc)))


def check_rule(config: type, rule: dict, default: dict | None, where: str, problems: Problems,
               choice: tuple[str, ...] = ()) -> None:
    """A rule's fields together, merged over the default's (``rules.over_default``): required fields
    (a pruning ``ratio``) present, and no combination the config refuses. A combination the default
    refuses by itself is reported at the default only."""
    merged = over_default(default, rule, choice)
    missing = [name for name in required_fields(config) if name not in merged]
    for name in missing:
        problems.add(f"{where}.{name}", "missing (required" + (", here or in default)" if default is not None else ")"))
    if missing:
        return
    try:
        config(**merged)
    except ConfigError as exc:
        if default and not _builds(config, default):
            return
        problems.add(where, f"this combination is not allowed: {yaml_words(str(exc))}")


def required_fields(config: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(config) if f.default is MISSING and f.default_factory is MISSING)


def allowed_form(name: str, message: str) -> str:
    """A config's message about field ``name`` as ``VALUE is not allowed (allowed: ...)``: the
    config prefixes are dropped and FinetuneSpec's "is not one of" / "must be" are rephrased."""
    message = message.removeprefix("invalid finetune spec: ").removeprefix(f"{name}: ").removeprefix(f"{name} ")
    message = re.sub(r"^(.*?) is not one of (.*)$", r"\1 is not allowed (allowed: \2)", message)
    message = re.sub(r"^(.*?) must be (.*)$", r"\1 is not allowed (allowed: \2)", message)
    return yaml_words(message)


def _annotation(config: type, name: str) -> str:
    annotation = next(f.type for f in fields(config) if f.name == name)
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def _companions(config: type, name: str) -> dict:
    """The other fields a field needs to be judged alone (its legal context)."""
    if config is PruneSettings:
        return {"ratio": 0.5, **({"pattern": "channel"} if name == "round_to" else {})}
    if config is QuantSettings:
        return {"weight_block": {"act_bits": None}, "act_dynamic": {"act_signed": False},
                "symmetric": {"weight_block": 32, "act_bits": None}}.get(name, {})
    if config is LowRankSettings and name not in RANK_CHOICE:
        return {"rank": 1}
    return {}


def _builds(config: type, values: dict) -> bool:
    try:
        config(**values)
    except (ConfigError, TypeError, ValueError):
        return False
    return True
