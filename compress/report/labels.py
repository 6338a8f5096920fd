"""What each λ_max in a report is the top eigenvalue of: which loss, which matrix, which parameters.

The report can show two λ_max that differ many-fold on the same model, and both are right:

- the curvature stage's top eigenvalues: the Hessian (or Gauss-Newton / K-FAC matrix) of its
  loss — cross-entropy against the labels, or self-distillation ½‖f − f₀‖² — averaged over the
  calibration data, at the float weights of the model as given: BatchNorm (if any) is its own
  layer with its own parameters;
- the fine-tuning sharpness: the Hessian of the training loss (QAT cross-entropy, KD, or their
  mix) over fixed training batches, on the model as apply left it: BatchNorm folded into the
  conv before it wherever the recipe quantizes (folding rescales the conv weights, and so the
  curvature along them), weights fake-quantized; for Adam, preconditioned (λ_max(P⁻¹H)).

The fine-tuning sharpness matters against the learning rate η: gradient descent is stable along
an eigenvector iff η·λ < 2, 2(1 + β) with heavy-ball momentum β (Cohen et al. 2021, arXiv
2103.00065; ``compress.finetune.sharpness``), so each recorded point is shown with the largest
stable λ at its η.
"""

from __future__ import annotations

LOSSES = {"ce": "cross-entropy", "cross_entropy": "cross-entropy",
          "distill": "self-distillation ½‖f − f₀‖² (its Hessian is the Gauss-Newton matrix)"}
TRAINING_LOSSES = {"qat": "cross-entropy (QAT)", "kd": "distillation loss (KD)",
                   "qat+kd": "(1 − kd_weight)·cross-entropy + kd_weight·distillation (QAT + KD)"}


def curvature_label(curvature: dict) -> str:
    """E.g. "λ of the cross-entropy Hessian over the calibration data, float model as given
    (BatchNorm, if any, unfolded)"."""
    loss = str(curvature.get("loss", ""))
    method = str(curvature.get("method", ""))
    matrix = "Hessian"
    if method.startswith(("kfac", "kflr")):
        matrix = "Kronecker-factored Gauss-Newton (K-FAC, Linear/Conv2d blocks only)"
    elif "(ggn)" in method:
        matrix = "Gauss-Newton matrix"
    return (f"λ of the {LOSSES.get(loss, loss or 'loss')} {matrix} over the calibration data, "
            "float model as given (BatchNorm, if any, unfolded)")


def sharpness_label(finetune_spec: dict | None, quantized: bool | None) -> str:
    """E.g. "λ_max of the fine-tuning training loss, QAT + KD, BatchNorm folded, fake-quantized
    weights, over fixed training batches". ``finetune_spec``: the recipe's ``finetune:`` section
    (None when unknown); ``quantized``: whether the recipe quantizes (apply then folds BatchNorm)."""
    spec = finetune_spec or {}
    loss = TRAINING_LOSSES.get(str(spec.get("mode")), "")
    parts = ["λ_max of the fine-tuning training loss" + (f": {loss}" if loss else "")]
    if quantized is None:
        parts.append("on the model as apply left it (BatchNorm folded where it quantizes)")
    elif quantized:
        parts.append("BatchNorm folded into the preceding convs, weights fake-quantized")
    else:
        parts.append("BatchNorm unfolded (the recipe does not quantize)")
    if spec.get("optimizer") == "adamw":
        parts.append("preconditioned by Adam's second moments (λ_max(P⁻¹H))")
    parts.append("over fixed training batches, eval mode")
    return ", ".join(parts)


def stability_rule(finetune_spec: dict | None) -> str:
    """The stability limit on λ_max at learning rate η for the recipe's optimizer (its section
    with ``FinetuneSpec``'s defaults filled in; None when unknown)."""
    if finetune_spec is None:
        return "2/η (2(1 + β)/η with momentum β)"
    momentum = finetune_spec["momentum"]
    if finetune_spec["optimizer"] == "adamw":
        return f"2(1 + β₁)/((1 − β₁)·η), β₁ = {momentum:g}"
    return f"2(1 + β)/η, β = {momentum:g}" if momentum else "2/η"


def finetune_section(recipe: dict | None) -> dict | None:
    """The recipe's ``finetune:`` section with ``FinetuneSpec``'s defaults filled in; None when the
    recipe has none (or ``mode: none``)."""
    from dataclasses import asdict

    from compress.finetune.spec import FinetuneSpec

    section = (recipe or {}).get("finetune")
    if not isinstance(section, dict) or section.get("mode") == "none":
        return None
    return {**asdict(FinetuneSpec()), **section}
