"""Speed options must not change results beyond numerical noise: a few steps with and without each one agree.

Compared: the first step's gradient (same parameters, same batch) and the training losses of 8 steps (two passes
over the tiny synthetic set without augmentation, so every variant sees the same batches). Final parameters are
not compared: this tiny ResNet amplifies a 1e-6 perturbation of its weights into percent-level parameter
differences within a few momentum steps, whatever the option.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import compose_config, tiny
from tvlars import distributed
from tvlars.build import build

SETUP = ["epochs=1", "dataset.channels=3", "optimizer.lr=0.05"]


def _trajectory(*overrides: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(training losses of 8 steps, flattened fp32 gradient of the first step) of the tiny run with ``overrides``."""
    engine = build(compose_config(tiny(*SETUP, *overrides)), distributed.init("cpu")).engine
    losses, first_grad = [], None
    for epoch in range(2):
        engine.train_loader.sampler.set_epoch(epoch)
        for batch in engine.train_loader:
            batch = engine._to_device(batch)
            if first_grad is None:
                with engine.amp():
                    loss, _ = engine.task.training_step(engine.train_model, batch)
                loss.backward()
                first_grad = torch.cat([p.grad.float().flatten() for p in engine.model.parameters()])
            engine._set_lr(len(losses))
            loss, _ = engine._train_step(batch)
            losses.append(loss.float())
    assert first_grad is not None
    return torch.stack(losses), first_grad


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """fp32, contiguous, eager, device path; ResNet and MLP; and another seed (the scale of a real difference)."""
    return {"resnet": _trajectory(), "mlp": _trajectory("model=mlp"), "other_seed": _trajectory("seed=1")}


@pytest.mark.parametrize(("overrides", "model", "grad_tol", "loss_tol"), [
    (["channels_last=true"], "resnet", 1e-4, 5e-3),
    (["data.on_device=false"], "resnet", 1e-4, 5e-3),
    (["compile=true", "model=mlp"], "mlp", 1e-4, 5e-3),
    # bf16 weight gradients of the stem are sums of 16k products with cancellation: ~25 % off in this tiny net
    (["precision=bf16"], "resnet", 0.5, 0.05),
    (["precision=bf16", "channels_last=true"], "resnet", 0.5, 0.05),
])
def test_option_changes_results_only_by_numerical_noise(overrides: list[str], model: str, grad_tol: float,
                                                        loss_tol: float, reference) -> None:
    losses, grad = _trajectory(*overrides)
    ref_losses, ref_grad = reference[model]
    assert ((grad - ref_grad).norm() / ref_grad.norm()).item() < grad_tol
    assert (losses - ref_losses).abs().max().item() < loss_tol
    assert losses[0].item() == pytest.approx(ref_losses[0].item(), rel=loss_tol / 5)  # same parameters, same batch
    # a tolerance that could not tell a real difference apart would make this test vacuous
    other_losses, other_grad = reference["other_seed"]
    assert (other_losses - reference["resnet"][0]).abs().max().item() > 4 * loss_tol
    assert ((other_grad - reference["resnet"][1]).norm() / reference["resnet"][1].norm()).item() > 2 * grad_tol
