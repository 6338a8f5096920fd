"""Collecting every problem of a recipe before reporting any: each names its key path, the bad
value and what is allowed (``quantization.layers.head.weight_bits: 9 is not allowed (allowed: 2..8
or null)``); one ``ConfigError`` lists them all, its first line a count."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from compress.errors import ConfigError


@dataclass
class Problems:
    items: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def refuse(self, path: str, value: object, allowed: str) -> None:
        """``PATH: VALUE is not allowed (allowed: ALLOWED)``, the value as YAML spells it."""
        self.add(path, f"{yaml_words(repr(value))} is not allowed (allowed: {allowed})")

    def unknown_keys(self, path: str, mapping: dict, allowed: tuple[str, ...]) -> None:
        for key in mapping:
            if key not in allowed:
                self.add(f"{path}.{key}" if path else str(key), f"unknown key (allowed: {', '.join(allowed)})")

    def raise_if_any(self, source: str) -> None:
        raise_problems(source, self.items)


def raise_problems(heading: str, problems: list[str]) -> None:
    """One ConfigError: ``HEADING: N problem(s)``, then one problem per line."""
    if problems:
        count = len(problems)
        raise ConfigError(f"{heading}: {count} problem{'s' if count > 1 else ''}\n  " + "\n  ".join(problems))


def yaml_words(text: str) -> str:
    """Python's None/True/False as a YAML user writes them."""
    return re.sub(r"\b(None|True|False)\b", lambda m: {"None": "null", "True": "true", "False": "false"}[m[1]], text)
