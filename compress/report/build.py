"""``build_report(inputs, out_dir) -> ReportPaths``: report.json, report.md and one
self-contained report.html in ``out_dir``; an existing report is replaced only with ``force``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.atomic import write_text
from compress.errors import InputError
from compress.jsonio import write_json
from compress.lock import output_lock
from compress.report.inputs import ReportInputs
from compress.report.plots import report_figures
from compress.report.render import html_page, markdown
from compress.report.summary import spearman, summary
from compress.report.tables import report_tables

FILES = ("report.json", "report.md", "report.html")


@dataclass(frozen=True)
class ReportPaths:
    json: Path
    markdown: Path
    html: Path


def build_report(inputs: ReportInputs, out_dir: str | Path, force: bool = False) -> ReportPaths:
    out = Path(out_dir)
    existing = [name for name in FILES if (out / name).exists()]
    if existing and not force:
        raise InputError(f"{out} already holds {', '.join(existing)}; set force=True to overwrite or choose another "
                         "out_dir")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; out_dir must be a directory")
    paths = ReportPaths(*(out / name for name in FILES))
    tables = report_tables(inputs)
    notes = report_notes(inputs)
    with output_lock(out):
        write_json(paths.json, {"version": inputs.version, "summary": summary(inputs), "inputs": inputs.to_dict()})
        write_text(paths.markdown, markdown(inputs, tables, notes))
        write_text(paths.html, html_page(inputs, tables, notes, report_figures(inputs)))
    return paths


def report_notes(inputs: ReportInputs) -> list[str]:
    notes = [f"{len(inputs.variants)} variant(s), {len(inputs.layers)} layer(s)."]
    rho = spearman(inputs)
    if rho is not None:
        notes.append(f"Spearman rank correlation of predicted vs measured per-layer loss change: {rho:.3f}.")
    if inputs.spectrum and inputs.spectrum.top_eigenvalues and inputs.sharpness:
        notes.append(_two_sharpnesses(inputs))
    return notes


def _two_sharpnesses(inputs: ReportInputs) -> str:
    """Why the curvature's λ_max and the fine-tuning sharpness differ (``compress.report.labels``)."""
    first = inputs.sharpness[0]
    return (f"Two different matrices: the curvature's largest eigenvalue {inputs.spectrum.top_eigenvalues[0]:.4g} is "
            f"the {inputs.spectrum.label or 'curvature stage’s'}; the fine-tuning sharpness "
            f"{first.lambda_max:.4g} at step {first.step} is the "
            f"{inputs.sharpness_label or 'λ_max of the fine-tuning training loss'}. Different losses and "
            "parametrisations (folding BatchNorm rescales the conv weights) give different λ_max; only the "
            "second is compared with the learning rate's stability limit.")
