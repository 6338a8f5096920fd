"""User overrides of the planner's choice per layer: ``NAME=CHOICE[|CHOICE...]``.

NAME is an exact module name or ``re:REGEX`` (full match); CHOICE is an option label as the plan
prints it (``fp32``, ``w8``, ``w4a8``, ``w4+s0.5``, ``w8+2:4``, ``w8+ch0.25``). The layer may then
take only the listed options. An exact name wins over a pattern; among patterns the first given
wins (the same precedence as recipes, DESIGN §3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compress.errors import InputError
from compress.vocab.options import LayerOption


@dataclass(frozen=True)
class Override:
    target: str  # module name or "re:REGEX"
    labels: tuple[str, ...]

    def matches(self, name: str) -> bool:
        if self.target.startswith("re:"):
            return re.fullmatch(self.target[3:], name) is not None
        return self.target == name


def parse_override(text: str) -> Override:
    target, sep, choices = text.rpartition("=")
    if not sep or not target or not choices:
        raise InputError(f"bad override {text!r}; write NAME=CHOICE or re:REGEX=CHOICE|CHOICE (e.g. head=w8)")
    if target.startswith("re:"):
        try:
            re.compile(target[3:])
        except re.error as exc:
            raise InputError(f"bad override {text!r}: invalid regular expression ({exc})") from None
    return Override(target, tuple(c.strip() for c in choices.split("|")))


def applicable_override(name: str, overrides: tuple[Override, ...]) -> Override | None:
    exact = [o for o in overrides if o.target == name]
    if exact:
        return exact[0]
    return next((o for o in overrides if o.target.startswith("re:") and o.matches(name)), None)


def restrict_options(options: dict[str, list[LayerOption]],
                     overrides: tuple[Override, ...]) -> dict[str, list[bool]]:
    """Per layer and option, whether the overrides allow it. Every override must match some layer
    and every named choice must be one of that layer's candidates."""
    for override in overrides:
        if not any(override.matches(name) for name in options):
            raise InputError(f"override {override.target!r} matches no plannable layer; "
                            f"layers are: {', '.join(list(options)[:8])}{' ...' if len(options) > 8 else ''}")
    allowed = {}
    for name, layer_options in options.items():
        override = applicable_override(name, overrides)
        labels = [o.own_label() for o in layer_options]
        if override is None:
            allowed[name] = [True] * len(labels)
            continue
        unknown = [c for c in override.labels if c not in labels]
        if unknown:
            raise InputError(f"override {override.target}={unknown[0]} is not a candidate for layer {name}; "
                            f"candidates: {', '.join(dict.fromkeys(labels))} (widen bits, sparsities or patterns)")
        allowed[name] = [label in override.labels for label in labels]
    return allowed
