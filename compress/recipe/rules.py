"""Per-layer rule tables: keys are ``default``, exact module names and ``re:REGEX`` patterns.

A layer's settings are the default's keys overridden by the rule that applies to it: its exact
name if present, else the first pattern (in file order) that fully matches it. A rule of ``null``
leaves the layer alone (e.g. ``head: null`` keeps the classifier float while ``default`` quantizes
everything else). Fields that are one choice (low-rank ``rank`` / ``rank_ratio``) are replaced
together: a rule naming any of them drops all of them from the default.
"""

from __future__ import annotations

import re

DEFAULT = "default"
PATTERN = "re:"


def applicable_rule(rules: dict[str, dict | None], name: str) -> str | None:
    """The key of the rule that applies to layer ``name`` (not counting ``default``)."""
    if name in rules:
        return name
    return next((key for key in rules if key.startswith(PATTERN) and re.fullmatch(key[len(PATTERN):], name)), None)


def over_default(default: dict | None, rule: dict, choice: tuple[str, ...] = ()) -> dict:
    """``rule``'s fields over ``default``'s; when ``rule`` names a field of ``choice``, none of the
    default's ``choice`` fields is kept."""
    default = default or {}
    if any(key in rule for key in choice):
        default = {key: value for key, value in default.items() if key not in choice}
    return {**default, **rule}


def resolve(rules: dict[str, dict | None], name: str, choice: tuple[str, ...] = ()) -> dict | None:
    """The merged settings of layer ``name``, or None when no rule (and no default) covers it or
    its rule is null."""
    key = applicable_rule(rules, name)
    default = rules.get(DEFAULT)
    if key is None:
        return None if default is None else dict(default)
    if rules[key] is None:
        return None
    return over_default(default, rules[key], choice)


def resolve_all(rules: dict[str, dict | None], names: list[str], choice: tuple[str, ...] = ()) -> dict[str, dict]:
    resolved = {name: resolve(rules, name, choice) for name in names}
    return {name: settings for name, settings in resolved.items() if settings is not None}
