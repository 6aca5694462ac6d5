r"""Sharpness: the dominant eigenvalue of the training-loss Hessian on a fixed batch, by power iteration with
Hessian-vector products (:func:`tvlars.curvature.power_iteration`), compared with the optimizer's stability
threshold (Cohen et al. 2021, "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability").

The fixed batch is the run's first training batch on each process (epoch 1, step 1), or its first
``sharpness_batch`` samples (a measurement costs ``sharpness_iters`` double backward passes over it). It is not
stored: a resumed run draws it again with the seeds the engine used for epoch 1 (same sampler order, same augmentation
draws), so it is the same batch. The Hessian is that of the loss the optimizer minimises (the task's training
loss, without weight decay) with respect to the optimizer's parameters, in fp32, in training mode (BatchNorm
uses batch statistics; its running statistics are restored afterwards). Under DDP each process takes its own
fixed batch and the products are averaged over processes: the Hessian of the global fixed batch's loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tvlars.curvature import hessian_vector_product, power_iteration
from tvlars.engine import seed_all
from tvlars.instruments.base import all_reduce_mean, head, measurement, optimized_params, publish

if TYPE_CHECKING:
    from tvlars.engine import Engine

DEFAULT_ITERS = 20


def first_group(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The first parameter group that adapts (``adapt``, the paper's convention), else the first group."""
    return next((g for g in optimizer.param_groups if g.get("adapt", True)), optimizer.param_groups[0])


def stability_threshold(optimizer: torch.optim.Optimizer) -> float | None:
    r"""The largest sharpness at which the optimizer is stable on a quadratic, with the LR now in force
    (Cohen et al. 2021): ``2/η`` for gradient descent, ``(2 + 2β)/(η(1 − d))`` with heavy-ball momentum ``β``
    and dampening ``d``, ``(2 + 2β)/(η(1 + 2β))`` with Nesterov momentum. ``None`` for every other optimizer
    (LARS, LAMB, AdamW, CDAT...): their effective LR differs per layer or per coordinate, so no single line
    applies. Read from the first adapting group; weight decay (which adds ``wd`` to every eigenvalue) is ignored."""
    if type(optimizer) is not torch.optim.SGD:
        return None
    group = first_group(optimizer)
    lr, beta, dampening = group["lr"], group["momentum"], group["dampening"]
    if lr <= 0 or dampening >= 1:
        return None
    if beta == 0:
        return 2.0 / lr
    if group["nesterov"]:
        return (2.0 + 2.0 * beta) / ((1.0 + 2.0 * beta) * lr)
    return (2.0 + 2.0 * beta) / ((1.0 - dampening) * lr)


def first_training_batch(engine: Engine) -> Any:
    """This process's first training batch of the run, on the device: the first batch of epoch 1 drawn again
    after seeding as :meth:`Engine.fit` seeds epoch 1 (``seed_all(seed, rank, 1)``, sampler epoch 0).
    Call it inside :func:`~tvlars.instruments.base.untouched`, which restores every random state afterwards."""
    sampler = getattr(engine.train_loader, "sampler", None)
    current = getattr(sampler, "epoch", None)
    seed_all(engine.opts.seed, engine.dist.rank, 1)
    if current is not None:
        sampler.set_epoch(0)  # type: ignore[union-attr]
    try:
        batch = next(iter(engine.train_loader))
    finally:
        if current is not None:
            sampler.set_epoch(current)  # type: ignore[union-attr]
    return engine._to_device(batch)


class Sharpness:
    """Measures ``lambda_max`` every ``every`` steps: ``iters`` Hessian-vector products, warm-started from the
    previous eigenvector (kept on the device and saved in checkpoints; the first start is drawn from a
    ``torch.Generator`` seeded with ``seed``, the same on every process).

    Reported: the eigenvalue of largest magnitude, with its sign (what power iteration finds). It is the largest
    eigenvalue whenever that one dominates, as it does in training (Ghorbani et al. 2019); a negative value
    means negative curvature dominated on that batch. Cost: one forward, one backward with graph and ``iters``
    double backward passes on the fixed batch; memory: the graph of the backward, kept through the iterations.
    """

    def __init__(self, every: int, iters: int = DEFAULT_ITERS, seed: int = 0, batch: int = 0) -> None:
        self.every, self.iters, self.seed, self.batch_limit = every, iters, seed, batch
        self._vector: list[Tensor] | None = None
        self._batch: Any = None

    def measure(self, engine: Engine) -> Tensor:
        """The dominant Hessian eigenvalue on the fixed batch (a float64 device tensor); updates the eigenvector."""
        if self._batch is None:
            self._batch = first_training_batch(engine)
            if self.batch_limit:
                self._batch = head(self._batch, self.batch_limit)
        params = optimized_params(engine.optimizer)
        if self._vector is None:
            generator = torch.Generator().manual_seed(self.seed)
            self._vector = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
        world = engine.dist.world_size
        with torch.enable_grad():
            loss, _ = engine.task.training_step(engine.model, self._batch)
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True, materialize_grads=True)
            value, self._vector = power_iteration(
                lambda v: all_reduce_mean(hessian_vector_product(grads, params, v, retain_graph=True), world),
                self._vector, self.iters)
        return value

    def record(self, engine: Engine, step: int) -> None:
        """Measure after optimizer step ``step``, append the row to ``sharpness.jsonl`` and log it (one host
        sync); ``lr`` is the LR of that step's update."""
        publish(engine, "sharpness", "sharpness", measurement(engine, step, {
            "lambda_max": self.measure(engine).item(), "lr": first_group(engine.optimizer)["lr"],
            "stability_threshold": stability_threshold(engine.optimizer)}))

    def state_dict(self) -> dict[str, Any]:
        return {"vector": self._vector}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self._vector = None if state["vector"] is None else [v.to(device, copy=True) for v in state["vector"]]
