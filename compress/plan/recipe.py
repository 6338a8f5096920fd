"""A plan written as a recipe YAML that ``compress apply`` reads (DESIGN §3), with a ``plan:``
section recording why: each layer's trace ± error, the options considered with their Ω, the
choice, its predicted loss increase and storage; the budgets, totals and solver status."""

from __future__ import annotations

from pathlib import Path

from compress.atomic import write_text
from compress.errors import InputError
from compress.plan.make import Plan
from compress.plan.settings import lowrank_rule, prune_rule, quant_rule


def plan_recipe(plan: Plan, model: str, data: str, weights: str | None) -> dict[str, object]:
    """The plan as a recipe (validated against the schema): per-layer quantization, pruning and
    (where the plan factorises layers) low-rank rules by exact module name, no fine-tuning (add a ``finetune:`` section to recover), and the why."""
    from compress.recipe.schema import parse_recipe

    quantization = {name: quant_rule(layer.option(), plan.act_signed) for name, layer in plan.layers.items()}
    pruning = {name: rule for name, layer in plan.layers.items() if (rule := prune_rule(layer.option()))}
    lowrank = {name: rule for name, layer in plan.layers.items() if (rule := lowrank_rule(layer.option()))}
    why = {name: {"trace": layer.trace, "trace_stderr": layer.trace_stderr, "num_weights": layer.num_weights,
                  "predicted_delta_loss": layer.predicted_delta_loss, "storage_bits": layer.storage_bits,
                  "sparsity_limit": layer.sparsity_limit, "latency_ms": layer.latency_ms,
                  "input_sparsity": layer.input_sparsity, "trace_converged": layer.trace_converged,
                  "omega_first_order": layer.omega_first_order, "omega_reconstructed": layer.omega_reconstructed,
                  "omega_absorbed": layer.omega_absorbed,
                  "considered": layer.considered, **({"rank": layer.rank} if layer.rank is not None else {})} for name, layer in plan.layers.items()}
    payload = {
        "version": 1,
        "model": {"spec": model, "weights": weights},
        "data": {"calibration": data},
        "quantization": {"layers": quantization},
        "pruning": {"layers": pruning},
        **({"lowrank": {"layers": lowrank}} if lowrank else {}),
        "plan": {"budgets": plan.budgets, "totals": plan.totals, "predicted_delta_loss": plan.predicted_delta_loss,
                 "solver": plan.solver, "tied_groups": plan.tied_groups, "loss_tolerance": plan.loss_tolerance,
                 "model_sparsity_limit": plan.model_sparsity_limit, "measured_options": plan.measured_options,
                 "verified": plan.verified,
                 "channel_groups": plan.channel_groups, "unconverged": plan.unconverged,
                 "float_latency_ms": plan.float_latency_ms, "loss_resolution": plan.loss_resolution,
                 "speed_checked": plan.speed_checked, "pricing": plan.pricing,
                 "layers": why},
    }
    return parse_recipe(payload, "the plan").to_dict()


def refuse_overwrite(path: Path, force: bool) -> None:
    """Existing work is never replaced silently."""
    if path.exists() and not force:
        raise InputError(f"{path} exists; pass --force to overwrite it or choose another -o path")


def write_recipe(recipe: dict[str, object], path: Path, header: str, force: bool) -> None:
    """Write the YAML with a comment header; never overwrite an existing file unless ``force``."""
    import yaml

    refuse_overwrite(path, force)
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    write_text(path, comments + yaml.safe_dump(recipe, sort_keys=False), replace=force)
