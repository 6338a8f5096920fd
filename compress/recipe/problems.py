"""Collecting every problem of a recipe before reporting any: each names its key path, the bad
value and what is allowed."""

from __future__ import annotations

from dataclasses import dataclass, field

from compress.errors import UserError


@dataclass
class Problems:
    items: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def unknown_keys(self, path: str, mapping: dict, allowed: tuple[str, ...]) -> None:
        for key in mapping:
            if key not in allowed:
                self.add(f"{path}.{key}" if path else str(key), f"unknown key (allowed: {', '.join(allowed)})")

    def raise_if_any(self, source: str) -> None:
        if self.items:
            count = len(self.items)
            raise UserError(f"{source}: {count} problem{'s' if count > 1 else ''}\n  " + "\n  ".join(self.items))
