"""Writes that must not replace existing work (``compress plan -o`` without ``--force``): when a
second run creates the same file while the first is still writing, the first is refused in one
line and the second's file stays as it was; nothing partial is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.atomic import atomic_path, write_text
from compress.errors import InputError
from compress.plan.recipe import write_recipe


def test_a_file_created_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "plan.yaml"
    with pytest.raises(InputError, match="created by another run meanwhile"):
        with atomic_path(target, replace=False) as partial:
            partial.write_text("ours")
            target.write_text("theirs")  # the other run finishes first
    assert target.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]


def test_replace_false_writes_a_new_file_and_replace_true_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "plan.yaml"
    write_text(target, "first", replace=False)
    assert target.read_text() == "first"
    with pytest.raises(InputError):
        write_text(target, "second", replace=False)
    write_text(target, "third")
    assert target.read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]


def test_a_recipe_is_replaced_only_with_force(tmp_path: Path) -> None:
    target = tmp_path / "plan.yaml"
    write_recipe({"model": "a"}, target, "one", force=False)
    with pytest.raises(InputError, match="exists"):
        write_recipe({"model": "b"}, target, "two", force=False)
    assert "model: a" in target.read_text()
    write_recipe({"model": "b"}, target, "two", force=True)
    assert "model: b" in target.read_text()
