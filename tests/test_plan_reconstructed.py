"""The planner prices what apply deploys: GPTQ-reconstructed Ω and the reconstructed single-layer ΔL.

Exact reference: one Linear layer under the self-distillation loss L = ½·mean‖W·x − W₀·x‖² is
quadratic in the weight with Hessian (XᵀX/N) ⊗ I (isotropic on the output side), so the loss change
of any weight equals ½·‖ΔW·Xᵀ‖²/N, and the planner's reconstructed Ω (K-FAC mapping with the exact
trace, computed here from the dense Hessian) must equal the loss change measured after apply_ has
reconstructed that option alone.
"""

import torch
from torch import nn

from compress.data.source import TensorData
from compress.plan.make import PlanEvidence, PlanSpec, make_plan
from compress.plan.measured import SingleLayerLoss
from compress.plan.reconstructed import Reconstructions, deployed_settings
from compress.vocab.options import LayerOption
from tests.helpers.curvature import curvature_for


def _toy(samples: int = 512, inputs: int = 24, outputs: int = 6):
    """A Linear layer fed strongly anisotropic inputs (reconstruction has directions to exploit)."""
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(inputs, inputs, generator=generator) * torch.logspace(0, -2, inputs)
    x = torch.randn(samples, inputs, generator=generator) @ mixing.T
    model = nn.Sequential(nn.Linear(inputs, outputs, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(outputs, inputs, generator=generator))
    return model, TensorData("toy", (x,), None)


def _exact_trace(model: nn.Module, data: TensorData) -> float:
    """Tr of the dense Hessian of the distillation loss with respect to the layer's weight."""
    x = data.inputs[0]
    weight0 = model[0].weight.detach().double()

    def loss(weight: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x.double() @ (weight - weight0).T) ** 2).sum(dim=1).mean()

    hessian = torch.autograd.functional.hessian(loss, weight0.clone())
    return float(hessian.reshape(weight0.numel(), -1).diagonal().sum())


def test_reconstructed_omega_equals_the_loss_change_apply_deploys() -> None:
    model, data = _toy()
    curvature = curvature_for(model, {"0": _exact_trace(model, data)})
    reconstruction = Reconstructions(model, list(data.batches(128)))
    measure = SingleLayerLoss(model, data, "distill", 128, reconstruction)
    spec = PlanSpec(budgets={"avg_bits": 3.0}, bits=(3,))
    plan = make_plan(model, curvature, spec, PlanEvidence(measure=measure, reconstruction=reconstruction))
    layer = plan.layers["0"]
    option = LayerOption(3)
    applied = measure.joint({"0": option})  # apply_ (GPTQ, the default method) on a copy
    # the model's loss is evaluated in float32: agreement to 1e-5 relative
    assert abs(layer.omega_reconstructed - applied) <= 1e-5 * applied, (layer.omega_reconstructed, applied)
    assert abs(measure("0", option) - applied) <= 1e-5 * applied  # the single-layer ΔL reconstructs too
    assert layer.omega_reconstructed < 0.7 * layer.omega_first_order  # what reconstruction bought
    assert layer.predicted_delta_loss >= layer.omega_reconstructed


def test_first_order_is_kept_where_apply_does_not_reconstruct() -> None:
    assert deployed_settings(LayerOption(None)) is None  # float weights
    assert deployed_settings(LayerOption(None, 0.5)) is None  # magnitude-only pruning
    assert deployed_settings(LayerOption(4, 0.5, "channel")) is None  # channel removal
    assert deployed_settings(LayerOption(4)).bits == 4
    settings = deployed_settings(LayerOption(4, 0.5, "2:4"))
    assert (settings.bits, settings.ratio, settings.pattern) == (4, 0.5, "2:4")
    model, data = _toy()
    curvature = curvature_for(model, {"0": 1.0})
    reconstruction = Reconstructions(model, list(data.batches(128)))
    spec = PlanSpec(budgets={"avg_bits": 32.0}, bits=(None,), sparsities=(0.5,))
    plan = make_plan(model, curvature, spec, PlanEvidence(reconstruction=reconstruction))
    assert plan.layers["0"].omega_reconstructed is None
    assert plan.layers["0"].predicted_delta_loss == plan.layers["0"].omega_first_order > 0


def test_each_option_is_reconstructed_once() -> None:
    model, data = _toy()
    reconstruction = Reconstructions(model, list(data.batches(128)))
    first = reconstruction.weight("0", LayerOption(4))
    assert reconstruction.weight("0", LayerOption(4)) is first
    assert reconstruction.weight("0", LayerOption(4, act_bits=8)) is first  # activations do not change the weight
    assert len(reconstruction.stats) == 1 and len(reconstruction.weights) == 1


def test_a_layers_options_share_one_inverse_factor_and_match_a_fresh_reconstruction(monkeypatch) -> None:
    """The factor of H is computed once per layer (not once per bit width) and changes nothing."""
    import compress.reconstruct.layer as layer
    from compress.reconstruct.layer import reconstruct_layer

    model, data = _toy()
    reconstruction = Reconstructions(model, list(data.batches(128)))
    calls = []
    real = layer.inverse_factor
    monkeypatch.setattr(layer, "inverse_factor", lambda *args: calls.append(1) or real(*args))
    priced = {bits: reconstruction.weight("0", LayerOption(bits)) for bits in (2, 3, 4, 8)}
    assert len(calls) == 1
    stats = reconstruction.layer_stats("0")
    for bits, weight in priced.items():
        fresh = reconstruct_layer(model[0].weight.detach().double(), stats, deployed_settings(LayerOption(bits)))
        assert torch.equal(weight, fresh.weight.to(weight.dtype)), bits
    assert len(calls) == 5  # the fresh ones factorise each time (no cache given)
