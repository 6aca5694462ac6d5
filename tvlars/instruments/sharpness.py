r"""Sharpness: the dominant eigenvalue of the training-loss Hessian on a fixed batch, by power iteration with
Hessian-vector products (:func:`tvlars.curvature.power_iteration`), compared with the optimizer's stability
threshold (Cohen et al. 2021, "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability");
optionally also the preconditioned sharpness ``λ_max(P^{1/2} H P^{1/2})`` with ``P`` the optimizer's current
diagonal preconditioner and its threshold (:mod:`tvlars.optim.stability`; Cohen et al. 2022), the quantity that
compares optimizers whose step differs per layer or per coordinate.

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
from tvlars.optim.stability import Preconditioner, first_group, preconditioner

if TYPE_CHECKING:
    from tvlars.engine import Engine

DEFAULT_ITERS = 20


def stability_threshold(optimizer: torch.optim.Optimizer) -> float | None:
    r"""The largest sharpness (of the raw Hessian) at which the optimizer is stable on a quadratic, with the LR now
    in force (Cohen et al. 2021): its :class:`~tvlars.optim.stability.Preconditioner`'s threshold when ``P = I``
    (SGD: ``2/η``, ``(2 + 2β)/(η(1 − d))`` with heavy-ball momentum ``β`` and dampening ``d``,
    ``(2 + 2β)/(η(1 + 2β))`` with Nesterov momentum), else ``None``: LARS, LAMB, AdamW... step by a per-layer or
    per-coordinate ``P``, so only the preconditioned sharpness has a threshold. Weight decay (which adds ``wd`` to
    every eigenvalue) is ignored."""
    return _raw_threshold(preconditioner(optimizer))


def _raw_threshold(found: Preconditioner | None) -> float | None:
    return found.threshold if found is not None and found.diagonal is None else None


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

    ``preconditioned``: also ``λ_max(P^{1/2} H P^{1/2})`` by ``iters`` more products on the same graph,
    ``v ↦ P^{1/2} H P^{1/2} v``, warm-started from its own previous eigenvector (the first start is the generator's
    next draw); with ``P = I`` (SGD) it is ``lambda_max`` itself, without more products.
    """

    def __init__(self, every: int, iters: int = DEFAULT_ITERS, seed: int = 0, batch: int = 0,
                 preconditioned: bool = False) -> None:
        self.every, self.iters, self.seed, self.batch_limit = every, iters, seed, batch
        self.preconditioned = preconditioned
        self._vectors: dict[str, list[Tensor]] = {}  # "raw" and "preconditioned" eigenvectors
        self._batch: Any = None

    def _start(self, params: list[Tensor]) -> None:
        """The first start of each iteration that has none, drawn in a fixed order (raw first, so that its start
        does not depend on the option)."""
        generator = torch.Generator().manual_seed(self.seed)
        for name in ("raw", "preconditioned"):
            drawn = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
            self._vectors.setdefault(name, drawn)

    def measure(self, engine: Engine, diagonal: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """The dominant Hessian eigenvalue on the fixed batch and, given ``diagonal`` (``P`` per parameter,
        :class:`~tvlars.optim.stability.Preconditioner`), that of ``P^{1/2} H P^{1/2}`` (else ``None``): float64
        device tensors, no host synchronisation. Updates the eigenvectors."""
        if self._batch is None:
            self._batch = first_training_batch(engine)
            if self.batch_limit:
                self._batch = head(self._batch, self.batch_limit)
        params = optimized_params(engine.optimizer)
        if len(self._vectors) < 2:
            self._start(params)
        world = engine.dist.world_size
        with torch.enable_grad():
            loss, _ = engine.task.training_step(engine.model, self._batch)
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True, materialize_grads=True)

            def hessian(v: list[Tensor]) -> list[Tensor]:
                return all_reduce_mean(hessian_vector_product(grads, params, v, retain_graph=True), world)

            value, self._vectors["raw"] = power_iteration(hessian, self._vectors["raw"], self.iters)
            if diagonal is None:
                return value, None
            roots = [d.sqrt() for d in diagonal]

            def preconditioned(v: list[Tensor]) -> list[Tensor]:
                scaled = hessian([x * r for x, r in zip(v, roots, strict=True)])
                return [x * r for x, r in zip(scaled, roots, strict=True)]

            scaled, self._vectors["preconditioned"] = power_iteration(preconditioned, self._vectors["preconditioned"],
                                                                      self.iters)
        return value, scaled

    def record(self, engine: Engine, step: int) -> None:
        """Measure after optimizer step ``step``, append the row to ``sharpness.jsonl`` and log it (one host
        sync); ``lr`` is the LR of that step's update. With ``preconditioned`` the row also holds
        ``lambda_max_preconditioned`` and ``preconditioned_threshold`` (``null`` for an optimizer without a
        :class:`~tvlars.optim.stability.Preconditioner`)."""
        found = preconditioner(engine.optimizer)
        value, scaled = self.measure(engine, found.diagonal if self.preconditioned and found is not None else None)
        values = torch.stack([value, value if scaled is None else scaled]).tolist()  # the one host sync
        row = {"lambda_max": values[0], "lr": first_group(engine.optimizer)["lr"],
               "stability_threshold": _raw_threshold(found)}
        if self.preconditioned:
            row |= {"lambda_max_preconditioned": None if found is None else values[1],
                    "preconditioned_threshold": None if found is None else found.threshold}
        publish(engine, "sharpness", "sharpness", measurement(engine, step, row))

    def state_dict(self) -> dict[str, Any]:
        return {"vector": self._vectors.get("raw"), "vector_preconditioned": self._vectors.get("preconditioned")}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self._vectors = {}
        for name, key in (("raw", "vector"), ("preconditioned", "vector_preconditioned")):
            if state.get(key) is not None:
                self._vectors[name] = [v.to(device, copy=True) for v in state[key]]
