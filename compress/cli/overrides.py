"""torchtune-style ``key.path=value`` overrides of a recipe on the command line: each value is
read as a YAML scalar (``1`` → int, ``null`` → None, ``qat+kd`` → str) and set at its dotted path,
creating mappings on the way; the result is then validated like a file (every problem at once)."""

from __future__ import annotations

import copy

from compress.errors import InputError


def apply_overrides(payload: object, overrides: list[str]) -> object:
    """A copy of the parsed recipe with every ``key.path=value`` set."""
    import yaml

    result = copy.deepcopy(payload)
    for item in overrides:
        path, sep, text = item.partition("=")
        keys = path.split(".")
        if not sep or not all(keys):
            raise InputError(f"bad override {item!r}; write key.path=value, e.g. finetune.epochs=1")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        _set(result, keys, value, item)
    return result


def _set(payload: object, keys: list[str], value: object, item: str) -> None:
    node = payload
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node, dict):
            raise InputError(f"override {item!r}: {'.'.join(keys[:depth])} is not a mapping")
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
    if not isinstance(node, dict):
        raise InputError(f"override {item!r}: {'.'.join(keys[:-1])} is not a mapping")
    node[keys[-1]] = value
