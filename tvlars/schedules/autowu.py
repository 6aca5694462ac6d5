"""AutoWU: exponential warm-up until a Gaussian process finds the loss minimum passed, then decay (Kim et al. 2021)."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch
from torch import Tensor

from tvlars import distributed
from tvlars.schedules.base import Schedule

log = logging.getLogger("tvlars")

LENGTHSCALE = 0.2  # RBF lengthscale on normalised time (fixed, not trained)
NOISE_INIT = 1e-3  # initial likelihood noise
FIT_POINTS, FIT_ITERS, FIT_LR = 100, 100, 0.01  # GP hyper-parameter fit: subsample, Adam iterations, Adam LR
TEST_POINTS, GRID_POINTS = 500, 500  # subsample per posterior draw; prediction grid over [0, 1]
DIFF_JITTER = 1e-4  # added to the variance of every difference f(x_i) − f(x_k)


def _import_gpytorch() -> Any:
    with warnings.catch_warnings():  # gpytorch's import triggers torch.jit deprecation warnings
        warnings.simplefilter("ignore", FutureWarning)
        import gpytorch
    return gpytorch


def _loss_gp(dtype: torch.dtype) -> Any:
    """The GP of the official code: ConstantMean, ScaleKernel(RBF) with lengthscale fixed at 0.2,
    Gaussian likelihood with noise initialised to 1e-3 (gpytorch ``ExactGP``, on the CPU)."""
    gpytorch = _import_gpytorch()

    class LossGP(gpytorch.models.ExactGP):
        def __init__(self) -> None:
            super().__init__(None, None, gpytorch.likelihoods.GaussianLikelihood())
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, x: Tensor) -> Any:
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    gp = LossGP().to(dtype)
    gp.initialize(**{"covar_module.base_kernel.lengthscale": LENGTHSCALE, "likelihood.noise": NOISE_INIT})
    gp.covar_module.base_kernel.raw_lengthscale.requires_grad_(False)
    return gp


class AutoWU(Schedule):
    r"""AutoWU: automated warm-up length and peak LR from the training loss, then a fixed decay.

    Source: C. Kim, S. Kim, J. Kim, D. Lee, S. Kim, "Automated Learning Rate Scheduler for Large-batch
    Training", 8th ICML AutoML Workshop 2021 (arXiv 2107.05855); every rule and default below follows the
    official code ``github.com/kakaobrain/autowu`` (``autowu.py``), except where marked *ours*.

    **Warm-up** (step ``t = 0, 1, …``; ``T = total_steps``; ``W = ⌊ρ·T⌋``)::

        lr(t) = min_lr · γ^t,   γ = (max_lr / min_lr)^(1/W)          (exponential; lr(W) would be max_lr)

    **Detection**, at the end of every warm-up epoch (after step ``t_e`` with ``(t_e + 1) % steps_per_epoch
    == 0``): the epoch's per-step losses (mean over DDP ranks) are appended to the warm-up history
    ``y_0 … y_{n−1}`` with ``x_i = i / n`` (so the history always spans [0, 1); non-finite losses keep
    their position but are never used). A GP (constant mean reset to the data mean, ScaleKernel(RBF) with
    lengthscale 0.2 fixed, Gaussian noise initialised to 1e-3) has its outputscale, noise and mean
    trained by Adam (lr 0.01, 100 iterations; the GP and its Adam state persist across epochs) on ≤ 100
    random points. Then 5 times: condition on ≤ 500 random points, take the noise-free posterior of f on
    500 points of [0, 1] and ``p_j = max_{i<k} P(f(x_i) < f(x_k))`` with ``x_k = 1`` ("now"), from the
    Gaussian of each difference (variance + 1e-4). The epoch is *positive* when more than half of the
    ``p_j`` exceed ``confidence``; ``patience`` positive epochs in a row end the warm-up. Subsamples are
    drawn without replacement from a ``torch.Generator`` seeded with ``seed``. Under DDP the test runs on rank 0
    and its outcome is broadcast, so every rank switches at the same step with the same LR (the GP's floating
    point on another CPU could tip a vote); the other ranks' GP is idle, and rank 0's state is the one saved.

    **Switch.** The decay starts at step ``s = t_e + 1`` from
    ``η₀ = mean_j min_lr · (lr(t_e) / min_lr)^{x*_j}``, ``x*_j`` = argmin of draw ``j``'s posterior mean
    (the LR at which the smoothed loss was lowest). Without detection the warm-up ends at ``s = W`` with
    ``η₀ = lr(W − 1)`` (≈ ``max_lr``); with ``W = 0`` there is no warm-up and ``η₀ = max_lr``.

    **Decay** (``t ≥ s``)::

        cos:        lr(t) = η₀ · ½(1 + cos(π (t − s) / (T − s)))                   (to 0 at T)
        const_cos:  lr(t) = η₀ for t < C,  then η₀ · ½(1 + cos(π (t − C) / (T − C))),
                    C = max(s, T − ⌊cooldown_fraction · T⌋)     (warm-up also ends at C at the latest)

    ``cos`` is the official ImageNet setting (``immediate_cooldown=True``); ``const_cos`` is its default
    ``decay_phase_factor=1, cooldown_fraction=0.2``.

    **Ours, not the official code's:** the GP runs in float64 on the CPU (the official code uses
    float32 and retries after ``NotPSDError``; here a GP failure makes that epoch's test negative, with
    a warning); a test with fewer than 2 finite points is negative without fitting; the optional
    ``max_lr=None``; the schedule is written in closed form as a function of the step, so the
    off-by-one details of the official code's chained PyTorch schedulers (e.g. where the cosine's first
    step falls) are not reproduced.

    **Few steps per epoch (large batches) and short runs.** The test runs once per epoch whatever the
    epoch length, on the whole history so far (x normalised, so the lengthscale is always 20 % of it).
    With 1–10 steps per epoch the GP sees few points and the posterior at "now" stays wide, so the test
    is conservative; fewer than 2 finite points count as a negative test. Because ``patience`` counts
    epochs, the LR keeps growing for at least ``patience`` epochs after the minimum: by a factor
    ``(max_lr/min_lr)^(patience / (ρ · epochs))``, i.e. ×1.8 for the official 120 epochs but ×10 for
    30 epochs and ×1000 for 10 (defaults). Short runs therefore overshoot into divergence or reach the cap
    ``W`` (then the decay starts from ≈ ``max_lr``); narrow the sweep (raise ``min_lr``, lower
    ``max_lr``) for them. The chosen ``η₀`` and the switch step are logged and kept in
    :meth:`state_dict` (``tests`` holds every epoch test: points, ``p`` per draw, votes, argmins).

    **LR scale.** AutoWU ignores the optimizer's configured LR and writes the same LR into every group.
    ``max_lr = 1`` suits Adam/LAMB-scale LRs; LARS-family optimizers (LRs ~1–35 in the paper's grids)
    need a larger ``max_lr``, e.g. ``schedule.max_lr=50``, or ``max_lr=None`` to use the optimizer's
    resolved LR (``base_lr``) as the cap.

    Host synchronisation: ``observe`` writes each loss into a device buffer; only at an epoch's last
    warm-up step is the buffer all-reduced (mean over DDP ranks, a collective every rank reaches) and
    copied to the host, and rank 0's test broadcast (one sync per epoch, warm-up only). After the switch
    ``observe`` does nothing.

    State (:meth:`state_dict`): switch step and LR, whether it was detected, the positive streak, the
    test records, the loss history, the current epoch's buffer, the subsampling generator, and the GP
    with its Adam state (warm-started across epochs), so a resumed run decides exactly as an
    uninterrupted one.

    Args:
        base_lr: the optimizer's resolved LR; used only as ``max_lr`` when ``max_lr`` is None.
        steps_per_epoch: optimizer steps per epoch (≥ 1).
        total_steps: ``T`` (≥ 1).
        min_lr: ``η_min`` (> 0), the first LR.
        max_lr: ``η_max`` (> min_lr), the LR the warm-up would reach at step ``W``; None: ``base_lr``.
        max_warmup_fraction: ``ρ`` in [0, 1].
        decay: ``"cos"`` or ``"const_cos"``.
        cooldown_fraction: the final cosine's share of ``T`` for ``const_cos``, in [0, 1].
        confidence: the per-draw threshold on ``p``, in (0, 1).
        patience: positive epoch tests in a row needed to switch (≥ 1).
        n_tests: posterior draws per epoch test (≥ 1).
        seed: seed of the subsampling generator (the same on every rank).
    """

    def __init__(self, base_lr: float, steps_per_epoch: int, total_steps: int, min_lr: float = 1e-5,
                 max_lr: float | None = 1.0, max_warmup_fraction: float = 0.5, decay: str = "cos",
                 cooldown_fraction: float = 0.2, confidence: float = 0.95, patience: int = 3, n_tests: int = 5,
                 seed: int = 0) -> None:
        super().__init__(base_lr, steps_per_epoch, total_steps)
        max_lr = base_lr if max_lr is None else max_lr
        if steps_per_epoch < 1 or total_steps < 1:
            raise ValueError(f"steps_per_epoch and total_steps must be >= 1 (got {steps_per_epoch}, {total_steps})")
        if not 0 < min_lr < max_lr:
            raise ValueError(f"need 0 < min_lr < max_lr (got min_lr={min_lr}, max_lr={max_lr})")
        if not 0.0 <= max_warmup_fraction <= 1.0:
            raise ValueError(f"max_warmup_fraction must be in [0, 1] (got {max_warmup_fraction})")
        if decay not in ("cos", "const_cos"):
            raise ValueError(f"decay must be 'cos' or 'const_cos' (got {decay!r})")
        if not 0.0 <= cooldown_fraction <= 1.0:
            raise ValueError(f"cooldown_fraction must be in [0, 1] (got {cooldown_fraction})")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1) (got {confidence})")
        if patience < 1 or n_tests < 1:
            raise ValueError(f"patience and n_tests must be >= 1 (got {patience}, {n_tests})")
        self.min_lr, self.max_lr, self.decay = min_lr, max_lr, decay
        self.confidence, self.patience, self.n_tests = confidence, patience, n_tests
        self.max_warmup_steps = math.floor(max_warmup_fraction * total_steps + 1e-9)  # W
        self.log_gamma = math.log(max_lr / min_lr) / max(self.max_warmup_steps, 1)
        # First step of the final cosine (for "cos" it starts right at the switch).
        self.cooldown_start = total_steps - math.floor(cooldown_fraction * total_steps + 1e-9) \
            if decay == "const_cos" else 0
        limit = self.max_warmup_steps if decay == "cos" else min(self.max_warmup_steps, self.cooldown_start)
        # The decay of a run without detection; a detection moves the switch earlier.
        self.switch_step = limit
        self.switch_lr = self.warmup_lr(limit - 1) if limit > 0 else max_lr
        self.detected = False
        self.streak = 0  # positive epoch tests in a row
        self.tests: list[dict[str, Any]] = []  # one record per epoch test
        self.history = torch.empty(0, dtype=torch.float64)  # warm-up losses (host)
        self.epoch_losses: Tensor | None = None  # the current epoch's losses (device)
        self.generator = torch.Generator().manual_seed(seed)
        self.gp = _loss_gp(torch.float64)
        self.gp_optimizer = torch.optim.Adam([p for p in self.gp.parameters() if p.requires_grad], lr=FIT_LR)

    # ------------------------------------------------------------------------------------------ LR
    def warmup_lr(self, step: int) -> float:
        """``min_lr · γ^step``."""
        return self.min_lr * math.exp(self.log_gamma * step)

    def lr(self, step: int) -> float:
        s, eta0, total = self.switch_step, self.switch_lr, self.total_steps
        if step < s:
            return self.warmup_lr(step)
        start = max(s, self.cooldown_start)
        if step < start:
            return eta0
        return eta0 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - start) / max(1, total - start))))

    def describe(self) -> str:
        return f"AutoWU (exponential warm-up until a GP finds the loss minimum, then {self.decay.replace('_', ' ')})"

    # ------------------------------------------------------------------------------------------ detection
    def observe(self, step: int, loss: Tensor) -> None:
        if step >= self.switch_step:
            return
        spe = self.steps_per_epoch
        if self.epoch_losses is None or self.epoch_losses.device != loss.device:
            buffer = torch.full((spe,), math.nan, dtype=torch.float32, device=loss.device)
            if self.epoch_losses is not None:
                buffer.copy_(self.epoch_losses)
            self.epoch_losses = buffer
        self.epoch_losses[step % spe].copy_(loss.detach())
        if (step + 1) % spe:
            return
        losses = distributed.all_reduce_sum(self.epoch_losses.clone()) / _world_size()
        self.history = torch.cat([self.history, losses.cpu().double()])
        self.epoch_losses.fill_(math.nan)
        positive, eta0, record = distributed.from_rank0(lambda: self._epoch_test(step))
        self.streak = self.streak + 1 if positive else 0
        record |= {"step": step, "epoch": (step + 1) // spe, "positive": positive, "streak": self.streak}
        self.tests.append(record)
        log.info("autowu: epoch %d test %s (%d/%d draws with p > %g, p = %s), %d/%d in a row; lr %.4g",
                 record["epoch"], "positive" if positive else "negative", record["votes"], self.n_tests,
                 self.confidence, [round(p, 4) for p in record["p"]], self.streak, self.patience,
                 self.warmup_lr(step))
        if self.streak >= self.patience:
            self.detected, self.switch_step, self.switch_lr = True, step + 1, eta0
            log.info("autowu: warm-up ends after step %d (epoch %d); %s decay from lr %.4g", step, record["epoch"],
                     self.decay, eta0)

    def _subsample(self, valid: Tensor, size: int) -> Tensor:
        """At most ``size`` of the ``valid`` indices, drawn without replacement, in order."""
        if len(valid) <= size:
            return valid
        picked = torch.ones(len(valid)).multinomial(size, generator=self.generator)
        return valid[picked.sort().values]

    def _epoch_test(self, step: int) -> tuple[bool, float, dict[str, Any]]:
        """Fit the GP to the history and run the ``n_tests`` draws; returns (positive?, η₀, record)."""
        y = self.history
        x = torch.arange(len(y), dtype=torch.float64) / len(y)
        valid = torch.isfinite(y).nonzero().flatten()
        record: dict[str, Any] = {"points": len(valid), "votes": 0, "p": [], "x_min": [], "lr_at_min": None}
        if len(valid) < 2:
            return False, math.nan, record
        from linear_operator.utils.errors import NotPSDError

        try:
            probs, argmins = self._fit_and_draw(x, y, valid)
        except NotPSDError as exc:
            warnings.warn(f"autowu: GP failed at step {step} ({exc}); this epoch's test counts as negative",
                          stacklevel=2)
            return False, math.nan, record
        votes = sum(p > self.confidence for p in probs)
        lr_now = self.warmup_lr(step)
        eta0 = sum(self.min_lr * (lr_now / self.min_lr) ** a for a in argmins) / len(argmins)
        record |= {"votes": votes, "p": probs, "x_min": argmins, "lr_at_min": eta0}
        return votes > self.n_tests / 2, eta0, record

    def _fit_and_draw(self, x: Tensor, y: Tensor, valid: Tensor) -> tuple[list[float], list[float]]:
        """Train the GP on ≤ 100 points, then ``n_tests`` posteriors on ≤ 500 points each; returns every
        draw's ``p`` and the argmin of its posterior mean."""
        gp = self.gp
        gp.initialize(**{"mean_module.constant": y[valid].mean()})
        idx = self._subsample(valid, FIT_POINTS)
        gp.set_train_data(x[idx], y[idx], strict=False)
        gp.train()
        mll = _import_gpytorch().mlls.ExactMarginalLogLikelihood(gp.likelihood, gp)
        with torch.enable_grad():
            for _ in range(FIT_ITERS):
                self.gp_optimizer.zero_grad()
                (-mll(gp(x[idx]), y[idx])).backward()
                self.gp_optimizer.step()
        gp.eval()
        grid = torch.linspace(0.0, 1.0, GRID_POINTS, dtype=torch.float64)
        probs, argmins = [], []
        for _ in range(self.n_tests):
            idx = self._subsample(valid, TEST_POINTS)
            gp.set_train_data(x[idx], y[idx], strict=False)
            with torch.no_grad():
                posterior = gp(grid)
                mean = posterior.mean
                probs.append(past_minimum_prob(mean, posterior.covariance_matrix))
            argmins.append(float(grid[mean.argmin()]))
        return probs, argmins

    # ------------------------------------------------------------------------------------------ state
    def summary(self) -> dict[str, Any]:
        """Whether the GP test ended the warm-up (else the cap did, or will), the step the decay starts at and
        its LR η₀."""
        return {"autowu_detected": self.detected, "autowu_switch_step": self.switch_step,
                "autowu_switch_lr": self.switch_lr}

    def state_dict(self) -> dict[str, Any]:
        return {"switch_step": self.switch_step, "switch_lr": self.switch_lr, "detected": self.detected,
                "streak": self.streak, "tests": [dict(t) for t in self.tests], "history": self.history.clone(),
                "epoch_losses": None if self.epoch_losses is None else self.epoch_losses.to("cpu", copy=True),
                "generator": self.generator.get_state(), "gp": self.gp.state_dict(),
                "gp_optimizer": self.gp_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.switch_step, self.switch_lr, self.detected = state["switch_step"], state["switch_lr"], state["detected"]
        self.streak, self.tests = state["streak"], [dict(t) for t in state["tests"]]
        self.history = state["history"].clone()
        self.epoch_losses = state["epoch_losses"]
        self.generator.set_state(state["generator"])
        self.gp.load_state_dict(state["gp"])
        self.gp_optimizer.load_state_dict(state["gp_optimizer"])


def _world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def past_minimum_prob(mean: Tensor, cov: Tensor) -> float:
    """``max_{i<k} P(f_i < f_k)`` for ``f ~ N(mean, cov)`` and ``k`` the last point, from the marginals of
    the differences ``f_i − f_k`` (variance + 1e-4), as the official code's ``past_minimum_prob``."""
    diff_mean = mean[:-1] - mean[-1]
    diff_var = (cov.diagonal()[:-1] + cov[-1, -1] - 2.0 * cov[:-1, -1]).clamp(min=0.0) + DIFF_JITTER
    z = -diff_mean / diff_var.sqrt()
    return float(0.5 * torch.erfc(-z / math.sqrt(2.0)).max())
