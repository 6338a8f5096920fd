"""A report (report.json, report.md, report.html) from results in memory or from the files the
other verbs write."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from compress.report.build import ReportPaths
    from compress.report.inputs import ReportInputs


@dataclass(frozen=True)
class Report:
    """What a report shows (``inputs``) and where its files are (``paths``: json, markdown, html)."""

    inputs: "ReportInputs"
    paths: "ReportPaths"


def _as_dict(result: Any) -> Any:
    """A result object as the dict its file holds (dicts pass through)."""
    from compress.recipe.schema import Recipe

    if result is None or isinstance(result, dict):
        return result
    if isinstance(result, Recipe):
        return result.to_dict()
    return result.to_dict()


def _parity_dict(result: Any) -> dict:
    """Parity figures from an ``ExportArtifact`` or a parity dict."""
    return result.parity if hasattr(result, "parity") else _as_dict(result)


def report_from_results(out_dir: str | Path, model: str | None = None, curvature: Any = None, plan: Any = None,
                        evals: Mapping[str, Any] | None = None, latency: Any = None, finetune: Any = None,
                        parity: Mapping[str, Any] | None = None, measured: dict | None = None,
                        force: bool = False) -> Report:
    """``plan`` is the plan's Recipe (``plan_as_recipe``) or its mapping; the others are result
    objects (``Curvature``, ``EvalResult``, ``LatencyResult``, ``FinetuneResult``, parity dicts) or
    their dicts."""
    from compress.errors import InputError
    from compress.plan.make import Plan
    from compress.report.build import build_report
    from compress.report.load import report_inputs

    if isinstance(plan, Plan):
        raise InputError("plan: give the plan as a recipe (plan_as_recipe), which names its model and data")
    inputs = report_inputs(model, _as_dict(curvature), _as_dict(plan),
                           {name: _as_dict(result) for name, result in (evals or {}).items()}, _as_dict(latency),
                           _as_dict(finetune), {t: _parity_dict(p) for t, p in (parity or {}).items()}, measured)
    return Report(inputs, build_report(inputs, out_dir, force=force))


def report_from_files(out_dir: str | Path, model: str | None = None, curvature: str | None = None,
                      plan: str | None = None, evals: Mapping[str, str] | None = None, latency: str | None = None,
                      finetune: str | None = None, parity: Mapping[str, str] | None = None,
                      measured: str | None = None, force: bool = False) -> Report:
    """``compress report``: the same from the files (paths) the verbs wrote."""
    from compress.errors import InputError
    from compress.report.build import build_report
    from compress.report.load import load_report_inputs

    if not (evals or latency or curvature or plan):
        raise InputError("nothing to report; give at least one of evals, latency, curvature, plan")
    inputs = load_report_inputs(model, curvature, plan, evals, latency, finetune, parity, measured)
    return Report(inputs, build_report(inputs, out_dir, force=force))
