"""The fine-tuning stage: ``finetune_(student, teacher, train, spec, checkpoint_dir) -> FinetuneResult``.

Trains whatever module it is given (fake-quant layers and pruning parametrizations keep their
own invariants in their forward passes) with SGD (heavy ball) or AdamW under a cosine schedule
from ``lr`` to 0 (Loshchilov & Hutter 2017), on the loss of ``spec.mode``.

BatchNorm: the student trains with every BatchNorm layer in eval mode, i.e. its running
statistics frozen (its affine weight and bias still train). Recovery fine-tuning starts from a
trained network on little data with small batches: batch statistics would be noisy and would
drift the running statistics away from those the weights were quantized and calibrated against
(Krishnamoorthi 2018, "Quantizing deep convolutional networks for efficient inference", §3.2,
freezes BN statistics for QAT; Jacob et al. 2018 do so after a warm-up). It also makes the
training loss a fixed function of the weights, which the sharpness measurement needs, and makes
the loss of a global batch independent of how torchrun splits it over ranks. We freeze in every
mode, not only QAT, for those last two reasons. Dropout stays active (seeded; under torchrun
each rank draws its own masks, so only dropout-free models match single-process runs exactly)
unless ``spec.dropout`` is false: then every dropout module (``nn.Dropout`` and its kin) stays in
eval mode too (dropout a model applies functionally, outside such modules, is not reached).

Block-local phase (``local_steps``, ``compress.finetune.local``): on a fresh run (not a resumed
one), each ``kd_layers`` module is first trained alone on the teacher's input to it.

Feature distillation (``kd_layers``): teacher and student both run as ``WithFeatures`` over the
matched modules (``compress.finetune.features``), so the loss, the sharpness and the gradients all
see the same ``(output, features)``; checkpoints hold the student's own state dict.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn

from compress.curvature.distributed import all_reduce_sum
from compress.data.source import Batch, DataSource
from compress.errors import InputError
from compress.finetune.checkpoint import load_latest, save_checkpoint
from compress.finetune.distributed import barrier, process_group, wrap
from compress.finetune.features import WithFeatures, feature_layers
from compress.finetune.local import distil_locally_
from compress.finetune.losses import Reference, TrainingLoss, training_loss
from compress.finetune.order import epoch_order, global_batch, load_batch, rank_slice
from compress.finetune.sharpness import (
    INITIAL_LANCZOS_STEPS,
    TRACKING_LANCZOS_STEPS,
    ProbeData,
    adam_scaling,
    auto_lr,
    stability_limit,
    top_eigenvalue,
)
from compress.finetune.spec import FinetuneResult, FinetuneSpec, SharpnessPoint
from compress.progress import progress_bar
from compress.reconstruct.stats import token_mask

SHARPNESS_BATCHES = 4  # global batches for the initial λ_max; tracking uses the first of them


@dataclass
class _Run:
    """The state of a run that checkpoints carry (besides the model and the RNGs)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    lr: float
    initial_sharpness: float | None
    total: int
    step: int = 0
    resumed_from: int | None = None
    sharpness_seconds: float = 0.0
    history: list[SharpnessPoint] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Context:
    """What every step needs and never changes during a run."""

    teacher: nn.Module | None
    train: DataSource
    spec: FinetuneSpec
    loss: TrainingLoss
    steps_per_epoch: int
    rank: int
    world: int


def finetune_(student: nn.Module, teacher: nn.Module | None, train: DataSource, spec: FinetuneSpec,
              checkpoint_dir: Path | None = None) -> FinetuneResult:
    """Fine-tune ``student`` in place (left in eval mode) on ``train``; resumes from the newest
    checkpoint in ``checkpoint_dir`` when there is one. Seeds torch and ``random`` with spec.seed."""
    begin = time.perf_counter()
    _check_inputs(teacher, train, spec)
    names = feature_layers(teacher, student, spec.kd_layers) if spec.uses_features else ()
    trained = _with_features(student, names)
    with process_group() as (rank, world):
        context = _Context(None if teacher is None else _with_features(teacher.eval(), names), train, spec,
                           training_loss(spec, train.has_targets), _steps_per_epoch(train, spec, world), rank, world)
        torch.manual_seed(spec.seed)
        random.seed(spec.seed)
        freeze_batchnorm_(student)
        if not spec.dropout:
            freeze_dropout_(student)
        fresh = checkpoint_dir is None or load_latest(checkpoint_dir) is None
        local = (distil_locally_(student, teacher, train, spec, names, partial(_optimizer_over, spec),
                                 context.steps_per_epoch) if spec.local_steps and fresh else [])
        probe = _probe_data(context) if spec.lr == "auto" or spec.sharpness_every else None
        run = _start(trained, probe, context, checkpoint_dir)
        barrier(world)
        _loop(wrap(trained, world), trained, run, probe, context, checkpoint_dir)
    student.eval()
    return FinetuneResult(
        steps=run.total, epochs_run=run.total / context.steps_per_epoch, lr=run.lr,
        lr_source="auto" if spec.lr == "auto" else "given", initial_sharpness=run.initial_sharpness,
        sharpness_history=tuple(run.history), losses=tuple(run.losses), resumed_from_step=run.resumed_from,
        world_size=world, seconds=time.perf_counter() - begin, sharpness_seconds=run.sharpness_seconds,
        local_losses=tuple(local))


def _start(student: nn.Module, probe: ProbeData | None, context: _Context, checkpoint_dir: Path | None) -> _Run:
    """A fresh run (lr given or from the sharpness) or one restored from the newest checkpoint;
    ``student`` is the trained module (``WithFeatures`` with kd_layers)."""
    spec = context.spec
    total = min(context.steps_per_epoch * spec.epochs, spec.max_steps or context.steps_per_epoch * spec.epochs)
    state = _resume_state(checkpoint_dir, spec)
    begin = time.perf_counter()
    lr, initial = (state["lr"], state["initial_sharpness"]) if state else _initial_lr(student, probe, context)
    optimizer = _optimizer(student, spec, lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    run = _Run(optimizer, scheduler, lr, initial, total, sharpness_seconds=time.perf_counter() - begin)
    if state is not None:
        _own(student).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.history = [SharpnessPoint(**point) for point in state["history"]]
        run.losses = list(state["losses"])
        run.step = run.resumed_from = state["step"]
    return run


def _loop(model: nn.Module, student: nn.Module, run: _Run, probe: ProbeData | None, context: _Context,
          checkpoint_dir: Path | None) -> None:
    """Steps until ``run.total``: track the sharpness, step, checkpoint (rank 0); ``model`` is
    ``student`` or its DDP wrapper."""
    spec = context.spec
    with progress_bar(f"finetune {spec.mode} (lr {run.lr:.3g})", run.total - run.step) as advance:
        while run.step < run.total:
            if spec.sharpness_every and run.step % spec.sharpness_every == 0:
                begin = time.perf_counter()
                run.history.append(_track(student, run.optimizer, probe, context, run.step))
                run.sharpness_seconds += time.perf_counter() - begin
            run.losses.append(_train_step(model, run.optimizer, context, run.step))
            run.scheduler.step()
            run.step += 1
            advance(1, f"loss {run.losses[-1]:.4g} lr {run.scheduler.get_last_lr()[0]:.3g}")
            if checkpoint_dir is not None and context.rank == 0 and run.step % spec.checkpoint_every == 0:
                save_checkpoint(checkpoint_dir, run.step, _state(student, run, context))


def _with_features(model: nn.Module, names: tuple[str, ...]) -> nn.Module:
    return WithFeatures(model, names) if names else model


def _own(model: nn.Module) -> nn.Module:
    """The model itself, not its ``WithFeatures`` wrapper (checkpoints hold its state dict)."""
    return model.model if isinstance(model, WithFeatures) else model


def freeze_batchnorm_(model: nn.Module) -> nn.Module:
    """Train mode everywhere except BatchNorm layers, whose running statistics stay fixed."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def freeze_dropout_(model: nn.Module) -> nn.Module:
    """Every dropout module (``nn.Dropout``, ``nn.Dropout2d``, …, ``nn.AlphaDropout``) in eval mode."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    return model


def _check_inputs(teacher: nn.Module | None, train: DataSource, spec: FinetuneSpec) -> None:
    if spec.uses_teacher and teacher is None:
        raise InputError(f"finetune mode {spec.mode} distils from a teacher; give one (the uncompressed model)")
    if spec.mode == "qat" and not train.has_targets:
        raise InputError(f"data {train.name} has no labels, so mode qat has no task loss; use kd or qat+kd")


def _steps_per_epoch(train: DataSource, spec: FinetuneSpec, world: int) -> int:
    if spec.batch_size > len(train):
        raise InputError(f"finetune.batch_size {spec.batch_size} exceeds the {len(train)} training examples of "
                         f"{train.name}")
    if spec.batch_size < world:
        raise InputError(f"finetune.batch_size {spec.batch_size} is smaller than the {world} ranks; each needs an example")
    return len(train) // spec.batch_size  # the last incomplete batch is dropped


def _batch_on_rank(context: _Context, indices: torch.Tensor) -> tuple[Batch, Reference]:
    shard = load_batch(context.train, rank_slice(indices, context.rank, context.world))
    if not context.spec.uses_teacher:
        return shard, Reference(shard.targets, None)
    with torch.no_grad():
        teacher = context.teacher(*shard.inputs)
    if isinstance(context.teacher, WithFeatures):
        output, features = teacher
        return shard, Reference(shard.targets, output, features, token_mask(shard.inputs))
    return shard, Reference(shard.targets, teacher)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, context: _Context, step: int) -> float:
    """One step on global batch ``step``; returns its mean loss over all ranks. Each rank's loss
    is scaled by world·n_r/n so that DDP's average of gradients is the global batch's gradient."""
    epoch, position = divmod(step, context.steps_per_epoch)
    indices = global_batch(epoch_order(len(context.train), context.spec.seed, epoch), position,
                           context.spec.batch_size)
    shard, reference = _batch_on_rank(context, indices)
    value = context.loss(model(*shard.inputs), reference)
    optimizer.zero_grad(set_to_none=True)
    (value * (context.world * len(shard) / len(indices))).backward()
    optimizer.step()
    return float(all_reduce_sum(value.detach().double() * (len(shard) / len(indices))))


def _probe_data(context: _Context) -> ProbeData:
    """The first SHARPNESS_BATCHES global batches of epoch 0, sliced for this rank."""
    count = min(SHARPNESS_BATCHES, context.steps_per_epoch)
    order = epoch_order(len(context.train), context.spec.seed, 0)
    batches = [global_batch(order, position, context.spec.batch_size) for position in range(count)]
    shards, references = zip(*(_batch_on_rank(context, indices) for indices in batches))
    return ProbeData(list(shards), list(references), [len(indices) for indices in batches])


def _initial_lr(student: nn.Module, probe: ProbeData | None, context: _Context) -> tuple[float, float | None]:
    """(lr, λ_max used for it): the given lr, or LR_FRACTION of the stability limit."""
    spec = context.spec
    if spec.lr != "auto":
        return float(spec.lr), None
    scaling = adam_scaling(student, None, probe, context.loss) if spec.optimizer == "adamw" else None
    sharpness = top_eigenvalue(student, probe, context.loss, INITIAL_LANCZOS_STEPS, spec.seed, scaling)
    return auto_lr(sharpness, spec.optimizer, spec.momentum), sharpness


def _track(student: nn.Module, optimizer: torch.optim.Optimizer, probe: ProbeData, context: _Context,
           step: int) -> SharpnessPoint:
    """λ_max on the first probe batch (few Lanczos steps), with the lr now and its limit."""
    spec, first = context.spec, probe.first()
    scaling = adam_scaling(student, optimizer, first, context.loss) if spec.optimizer == "adamw" else None
    sharpness = top_eigenvalue(student, first, context.loss, TRACKING_LANCZOS_STEPS, spec.seed + 1, scaling)
    lr = optimizer.param_groups[0]["lr"]
    return SharpnessPoint(step, sharpness, lr, stability_limit(sharpness, spec.optimizer, spec.momentum))


def _optimizer(student: nn.Module, spec: FinetuneSpec, lr: float) -> torch.optim.Optimizer:
    return _optimizer_over(spec, [p for p in student.parameters() if p.requires_grad], lr)


def _optimizer_over(spec: FinetuneSpec, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """No weight decay: recovery should not shrink weights towards zero (it moves quantization scales)."""
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(spec.momentum, 0.999), weight_decay=0.0)
    return torch.optim.SGD(params, lr=lr, momentum=spec.momentum)


def _resume_state(checkpoint_dir: Path | None, spec: FinetuneSpec) -> dict | None:
    state = load_latest(checkpoint_dir) if checkpoint_dir is not None else None
    if state is not None and state["spec"] != spec.to_dict():
        raise InputError(f"the checkpoints in {checkpoint_dir} are of a different finetune spec; "
                        "use another checkpoint directory or the same spec")
    return state


def _state(student: nn.Module, run: _Run, context: _Context) -> dict:
    epoch, position = divmod(run.step, context.steps_per_epoch)
    return {"model": _own(student).state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "spec": context.spec.to_dict(), "lr": run.lr,
            "initial_sharpness": run.initial_sharpness, "data": {"epoch": epoch, "position": position},
            "history": [asdict(point) for point in run.history], "losses": list(run.losses)}
