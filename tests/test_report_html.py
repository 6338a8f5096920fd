"""report.html renders in a real browser: headless Chromium screenshots the page, and the image
must be far from blank (many colours, much non-white), a check an empty page fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from compress.report.build import build_report
from tests.helpers.report_files import load, write_stage_files

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(BROWSER is None, reason="chromium is not installed (apt-get install -y chromium)")
MIN_INK, MIN_COLOURS = 0.03, 200  # share of non-white pixels, distinct RGB colours


def screenshot(page: Path, out: Path) -> Path:
    """Chromium's headless screenshot of ``page`` at 1200×2000 (``--no-sandbox`` when root)."""
    command = [BROWSER, "--headless", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={out.parent / 'profile'}",
               f"--screenshot={out}", "--window-size=1200,2000", page.resolve().as_uri()]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return out


def ink_and_colours(png: Path) -> tuple[float, int]:
    """Share of pixels darker than near-white, and number of distinct colours."""
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"))
    ink = float((pixels.min(axis=2) < 245).mean())
    return ink, len(np.unique(pixels.reshape(-1, 3), axis=0))


def test_report_page_renders_with_plots(tmp_path: Path) -> None:
    report = build_report(load(write_stage_files(tmp_path)), tmp_path / "report")
    ink, colours = ink_and_colours(screenshot(report.html, tmp_path / "report.png"))
    assert ink > MIN_INK and colours > MIN_COLOURS, (ink, colours)


def test_blank_page_fails_the_check(tmp_path: Path) -> None:
    page = tmp_path / "empty.html"
    page.write_text("<!DOCTYPE html><html><body></body></html>")
    ink, colours = ink_and_colours(screenshot(page, tmp_path / "empty.png"))
    assert not (ink > MIN_INK and colours > MIN_COLOURS), (ink, colours)
