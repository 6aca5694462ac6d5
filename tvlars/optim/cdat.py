"""CDAT: a curvature-aware step size on top of a base optimizer's direction (Roulet et al. 2024)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from tvlars.curvature import hessian_vector_product
from tvlars.optim._trust import ParamsT, TrustRatioOptimizer, accumulation_dtype, check_range
from tvlars.optim.lamb import LAMB, as_betas
from tvlars.optim.lars import LARS
from tvlars.optim.stability import one_minus_pow

BASES = ("sgd", "lars", "lamb")


def _dots(a: list[Tensor], b: list[Tensor], dtype: torch.dtype) -> Tensor:
    """``Σ_i ⟨a_i, b_i⟩`` accumulated in ``dtype`` (a 0-d device tensor)."""
    return torch.stack([torch.vdot(x.reshape(-1).to(dtype), y.reshape(-1).to(dtype)) for x, y in zip(a, b,
                                                                                                    strict=True)]).sum()


class CDAT(Optimizer):
    r"""Curvature Dynamics Aware Tuning: the base optimizer's direction with a step size from its curvature.

    Source: V. Roulet, A. Agarwala, J.-B. Grill, G. Swirszcz, M. Blondel, F. Pedregosa, "Stepping on the
    Edge: Curvature Aware Learning Rate Tuners", NeurIPS 2024 (arXiv 2407.06183). No official code was
    found; the rule is the paper's as stated in its abstract and secondary summaries (the EMA form is
    the natural reading of "smoothing via EMA"). Every step::

        loss, g = closure(create_graph=True)                    (one forward, backward with graph)
        u       = −D,  D = the base optimizer's step at unit LR (its state advances as in its own step)
        g̃ = g + wd·w,   H̃u = Hu + wd·u                          (the L2-regularised objective the base minimises)
        n_t = max(−g̃ᵀu, 0) ;   c_t = uᵀH̃u ;   d_t = |c_t|        (Hu: one Hessian-vector product, double backward)
        n̄ = β n̄ + (1−β) n_t ;   d̄ = β d̄ + (1−β) d_t               (n̄_0 = d̄_0 = 0)
        η_t = clamp(σ · n̄ / (d̄ + ε·(1 − β^t)), 0, lr)           (= σ n̂/(d̂ + ε) with bias-corrected n̂, d̂)
        w ← w + η_t · u

    ``σ = 2`` steps to the edge of stability (on a quadratic, twice the greedy step leaves the loss along
    ``u`` unchanged; for GD along the top eigenvector, η = 2/λ_max); ``σ = 1`` is the greedy step that
    minimises the local quadratic along ``u``. The EMA makes the tuner usable with mini-batches.

    Base directions (``base``), at unit LR and including momentum and trust ratios:

    * ``"sgd"``: heavy-ball SGD, ``D = b ← m·b + (g + wd·w)`` (torch's SGD without dampening); built as
      :class:`LARS` with every group ``adapt=False``.
    * ``"lars"``: :class:`LARS`'s ``D = b ← m·b + r·(g + wd·w)``, ``r = η_trust‖w‖/‖g + wd·w‖``.
    * ``"lamb"``: :class:`LAMB`'s ``D = τ·(m̂/(√v̂ + ε_base) + wd·w)``.

    The base is composed, not re-implemented: :meth:`TrustRatioOptimizer.direction` runs its step without
    writing the parameters. Weight decay is therefore inside ``u`` exactly as in the base optimizer,
    and CDAT's quadratic model is that of ``loss + ½ wd‖w‖²`` (per group; 0 for 1-D tensors under
    :func:`tvlars.optim.param_groups`). With ``wd = 0`` this is the paper's rule on the loss itself.

    **Defaults.** ``σ = 2``: the paper's full-batch "edge" setting (it reports that the best σ shrinks
    with the batch size). Ours, as the paper's values were not retrieved: ``β = 0.9`` (EMA of numerator
    and denominator, bias-corrected so the first step is the exact rule), ``ε = 1e-12`` (only guards
    ``0/0``), and the cap ``lr`` (a safety rail against ``d_t ≈ 0``; hits are logged as ``lr_clipped``).

    **The ``lr`` argument is the cap on η**, read from each group at every step (so a schedule or an
    ``lr_mult`` acts on the cap, never on η below it). Use ``schedule=none``: CDAT replaces warm-up
    and decay. The scale of η depends on the base, since ``‖D‖`` does (``‖D‖ ≈ η_trust‖w‖`` per tensor
    for LARS, ``≈ ‖w‖`` for LAMB): on Fashion-MNIST, ResNet-18 ×0.125, B = 512, η was 0.08–0.3 with
    ``sgd``, 4–13 with ``lars`` and 0.05–0.1 with ``lamb`` over the first 24 steps.

    **Cost and syncs.** One forward, one backward with graph and one double backward per step, plus a
    few reductions: measured on the CPU (``scripts/bench_cdat.py``) 2.1–2.9× the base optimizer's plain
    training step on an MLP and ≈ 4.5× on a small BatchNorm ResNet (the double backward of convolutions
    and batch norm costs more than a backward). ``step`` reads no tensor value on the host:
    η stays a device tensor (no ``.item()``, no branch on values); only the closure runs the model.
    The graph is freed inside ``step``; afterwards ``.grad`` holds the detached gradients.

    **Limits.** Single process only: under DDP the reducer overwrites ``.grad`` with all-reduced
    gradients that carry no graph, so the HVP would be wrong; CDAT raises ``ValueError`` when
    ``torch.distributed`` runs with more than one process. ``compile=true`` fails: aot_autograd does not
    support double backward. BatchNorm is fine (one forward, so running statistics update once per
    step; the HVP differentiates through the batch statistics).

    Observables (:meth:`trust_stats`, device tensors): the base's per-parameter ``trust_ratio``,
    ``weight_norm``, ``update_norm`` (``param_groups`` order; for ``sgd`` the ratio is 1), plus 0-d
    ``cdat_lr`` (η_t applied to the first group), ``sharpness`` (``c_t/‖u‖²``), ``numerator`` (``n_t``),
    ``curvature`` (``c_t``) and ``lr_clipped`` (1 if the cap bound η_t in the first group, else 0).

    Args:
        params: tensors or param groups (keys ``weight_decay``, ``adapt``, ``lr`` override the defaults).
        lr: cap on η (≥ 0).
        base: ``"sgd"``, ``"lars"`` or ``"lamb"``.
        sigma: ``σ`` (> 0).
        beta: EMA factor ``β`` in [0, 1); 0 uses each step's own estimates.
        eps: ``ε`` (> 0) added to the denominator.
        momentum: ``m`` of ``sgd``/``lars``, in [0, 1).
        weight_decay: ``wd`` (≥ 0), L2 inside the base direction.
        trust_coefficient: LARS's ``η_trust`` (> 0).
        betas: LAMB's ``(β1, β2)``.
        base_eps: LAMB's ``ε``.
        bias_correction: LAMB's moment bias correction.
        fused: the base's compiled step (``None``: on CUDA only); the tuner itself runs eagerly.
    """

    needs_closure = True

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        base: str = "lars",
        sigma: float = 2.0,
        beta: float = 0.9,
        eps: float = 1e-12,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        betas: Sequence[float] = (0.9, 0.999),
        base_eps: float = 1e-6,
        bias_correction: bool = True,
        fused: bool | None = None,
    ) -> None:
        if base not in BASES:
            raise ValueError(f"base must be one of {', '.join(BASES)} (got {base!r})")
        check_range("sigma", sigma, 0.0, low_open=True)
        check_range("beta", beta, 0.0, 1.0, high_open=True)
        check_range("eps", eps, 0.0, low_open=True)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError("CDAT supports a single process only: under DDP the all-reduced gradients carry no "
                             "graph for the Hessian-vector product; run without torchrun")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "adapt": True})
        for group in self.param_groups:
            check_range("lr", group["lr"], 0.0)
        self.sigma, self.beta, self.eps = sigma, beta, eps
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"], "adapt": g["adapt"] and base != "sgd"}
                  for g in self.param_groups]
        if base == "lamb":
            self.base: TrustRatioOptimizer = LAMB(groups, lr=1.0, betas=as_betas(betas), eps=base_eps,
                                                  bias_correction=bias_correction, fused=fused)
        else:
            self.base = LARS(groups, lr=1.0, momentum=momentum, trust_coefficient=trust_coefficient, fused=fused)
        self._ema: Tensor | None = None  # (n̄, d̄), created on the parameters' device at the first step
        self._t: Tensor | None = None  # the step count t (a device tensor)
        self._stats: dict[str, Tensor] = {}

    # --- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["base"] = self.base.state_dict()
        state["tuner"] = {"ema": self._ema, "t": self._t}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the base's state and the tuner's; the tuner's tensors are copied to the parameters' device
        and accumulation dtype (a checkpoint may have been read with ``map_location="cpu"``)."""
        state_dict = dict(state_dict)
        base, tuner = state_dict.pop("base"), state_dict.pop("tuner")
        super().load_state_dict(state_dict)
        self.base.load_state_dict(base)
        params = [p for group in self.param_groups for p in group["params"]]
        place = {"device": params[0].device, "dtype": accumulation_dtype(params), "copy": True}
        self._ema = None if tuner["ema"] is None else tuner["ema"].to(**place)
        self._t = None if tuner["t"] is None else tuner["t"].to(**place)
        self._stats = {}

    # --- step --------------------------------------------------------------------------------------
    def step(self, closure: Callable[..., Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One CDAT step; ``closure(create_graph=True)`` must zero the grads, run the model and call
        ``loss.backward(create_graph=True)``, and return the loss."""
        if closure is None:
            raise ValueError("CDAT needs a closure: closure(create_graph=True) -> loss")
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            loss = closure(create_graph=True)
        params, grads, decays = [], [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    grads.append(p.grad)
                    decays.append(group["weight_decay"])
                    p.grad = p.grad.detach()  # the base reads plain gradients; the graph stays in ``grads``
        if not params:
            return loss
        directions = [d for d in self.base.direction() if d is not None]  # D = −u, aligned with ``params``
        hvp = hessian_vector_product(grads, params, directions)  # HD = Σ_i (∂g_i/∂w)ᵀ D_i, double backward
        del grads  # frees the graph
        self._tune(params, directions, hvp, decays)
        return loss

    @torch.no_grad()
    def _tune(self, params: list[Tensor], directions: list[Tensor], hvp: list[Tensor], decays: list[float]) -> None:
        """η from the EMAs of ``gᵀD`` and ``DᵀHD`` (weight decay added), then ``w ← w − η·D``."""
        acc = accumulation_dtype(params)
        decayed = [i for i, wd in enumerate(decays) if wd != 0.0]
        for i in decayed:  # g̃ = g + wd·w and H̃D = HD + wd·D on the tensors that decay
            hvp[i] = hvp[i].add(directions[i], alpha=decays[i])
        grads = [p.grad for p in params]
        numerator = _dots(grads, directions, acc)  # gᵀD = −gᵀu
        if decayed:
            numerator = numerator + _dots([params[i] for i in decayed], [directions[i] * decays[i] for i in decayed],
                                          acc)
        curvature = _dots(directions, hvp, acc)  # uᵀH̃u
        n_t, d_t = numerator.clamp(min=0.0), curvature.abs()
        if self._ema is None or self._t is None:
            self._ema = torch.zeros(2, dtype=acc, device=numerator.device)
            self._t = torch.zeros((), dtype=acc, device=numerator.device)
        self._ema.lerp_(torch.stack([n_t, d_t]), 1.0 - self.beta)
        self._t.add_(1.0)
        raw = self.sigma * self._ema[0] / (self._ema[1] + self.eps * one_minus_pow(self.beta, self._t))
        start, first_eta = 0, None
        for group in self.param_groups:
            count = sum(p.grad is not None for p in group["params"])
            if not count:
                continue
            eta = raw.clamp(min=0.0, max=group["lr"])
            first_eta = eta if first_eta is None else first_eta
            # one 0-d η for the whole list (the ScalarTensor overload: CUDA's multi-tensor fast path applies)
            torch._foreach_sub_(params[start:start + count], torch._foreach_mul(directions[start:start + count], eta))
            start += count
        assert first_eta is not None
        self._stats = {"cdat_lr": first_eta, "sharpness": curvature / _dots(directions, directions, acc),
                       "numerator": n_t, "curvature": curvature, "lr_clipped": (raw > first_eta).to(acc)}

    def trust_stats(self) -> dict[str, Tensor]:
        """The base optimizer's per-parameter observables of the last step plus CDAT's 0-d ones (see the
        class docstring); empty before the first step and after :meth:`load_state_dict`."""
        if not self._stats:
            return {}
        return {**self.base.trust_stats(), **self._stats}
