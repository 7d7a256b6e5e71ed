"""The optimisers a training run may name (``TrainConfig.optimizer``).

* ``"adam"`` (default, and what the paper presets pin): dense Adam, the official TF1 behaviour —
  every row of every table has its moments decayed and its value moved at every step, whether
  the batch used it or not (:func:`make_adam`).
* ``"lazy_adam"``: row-sparse Adam (TensorFlow's ``LazyAdamOptimizer``, PyTorch's
  ``SparseAdam``) for the embedding tables, dense Adam for everything else (:class:`LazyAdam`).
  The models gather their table rows with row-sparse gradients, and only the rows a step used
  have their moments and values updated; a row no batch touches keeps its value and its moments.
  On ml-1m a CML step then reads and writes about 2,500 of 8,759 rows instead of all of them,
  and the unit-ball projection runs over those rows only (docs/performance.md). It is a
  different optimiser, not a faster dense Adam: its accuracy against dense Adam is measured in
  docs/performance.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

OPTIMIZERS = ("adam", "lazy_adam")


def make_adam(parameters: list[dict[str, Any]], lr: float) -> torch.optim.Adam:
    """Dense Adam over parameter groups (the official TF1 behaviour: every row's moments decay
    every step), fused into one kernel where this torch build supports it — on CPU that is about
    4× faster for the full-table updates that dominate a step on large item sets."""
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(parameters, lr=lr)


def make_optimizer(name: str, parameters: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`) over parameter groups."""
    if name == "lazy_adam":
        return LazyAdam(parameters, lr=lr)
    return make_adam(parameters, lr)


class LazyAdam(torch.optim.Optimizer):
    """Adam in which a parameter with a sparse gradient (a table gathered with
    ``sparse=True``) updates only the rows its gradient holds; parameters with dense gradients
    follow Adam (the formula of ``torch.optim.Adam`` up to rounding, L2 ``weight_decay``
    included). Duplicate rows of a sparse gradient are summed first, in index order, so the step
    is deterministic. :attr:`touched` maps each row-sparse parameter to the rows the last step
    moved (sorted, unique): what the post-step projection has to look at.

    Bias correction uses the parameter's step count, as ``SparseAdam`` and TF's lazy Adam do; a
    row's moments are decayed only on the steps that touch it.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, not {lr}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self.touched: dict[Tensor, Tensor] = {}

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.touched = {}
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    # Adam's own state layout, so tools that read it need no special case
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                if param.grad.is_sparse:
                    self.touched[param] = _sparse_step(param, state, group)
                else:
                    _dense_step(param, param.grad, state, group)
        return loss


def _corrections(state: dict[str, Any], group: dict[str, Any]) -> tuple[float, float]:
    """Adam's step size ``lr / (1 - β1^t)`` and ``sqrt(1 - β2^t)``."""
    beta1, beta2 = group["betas"]
    step = float(state["step"])
    return group["lr"] / (1 - beta1**step), math.sqrt(1 - beta2**step)


def _adam_update(
    value: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, state, group
) -> None:
    """One Adam update of ``value`` and its moments in place. Written as single-rounding
    elementwise operations (no ``lerp``/``addcmul``, which fuse a multiply-add on some CPUs) so
    that the compiled CML step (:mod:`hlrm.training.kernels`) can repeat it operation for
    operation; the same formula as ``torch.optim.Adam`` up to rounding."""
    beta1, beta2 = group["betas"]
    if group["weight_decay"]:
        grad = grad + value * group["weight_decay"]
    exp_avg.mul_(beta1).add_(grad * (1 - beta1))
    exp_avg_sq.mul_(beta2).add_(grad * grad * (1 - beta2))
    step_size, correction_sqrt = _corrections(state, group)
    # the square root in float64, rounded once to float32: correctly rounded, which torch's
    # float32 sqrt (SLEEF, within 0.5001 ulp) is not always, and what the compiled step does
    denominator = exp_avg_sq.double().sqrt_().float().div_(correction_sqrt).add_(group["eps"])
    value.sub_(exp_avg.div(denominator).mul_(step_size))


def _dense_step(param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
    _adam_update(param, grad, state["exp_avg"], state["exp_avg_sq"], state, group)


def _sparse_step(param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor:
    """Adam on the rows of a row-sparse gradient; returns those rows."""
    rows, values = summed_rows(param.grad)
    value = param.index_select(0, rows)
    exp_avg = state["exp_avg"].index_select(0, rows)
    exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
    _adam_update(value, values, exp_avg, exp_avg_sq, state, group)
    param.index_copy_(0, rows, value)
    state["exp_avg"].index_copy_(0, rows, exp_avg)
    state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
    return rows


def summed_rows(grad: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct rows (sorted) of a sparse (COO) gradient and their summed values.
    Duplicates are added in index order (``index_add_`` walks the entries in turn), not by
    ``coalesce``, whose summation order is not guaranteed across thread counts."""
    if grad.sparse_dim() != 1:  # not row-sparse (an element-sparse gradient): rows of it
        grad = grad.to_dense().to_sparse(sparse_dim=1)
    indices = grad._indices()[0]
    values = grad._values()
    if grad.is_coalesced():
        return indices, values
    rows, inverse = torch.unique(indices, sorted=True, return_inverse=True)
    summed = values.new_zeros((len(rows), *values.shape[1:]))
    return rows, summed.index_add_(0, inverse, values)


@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[Tensor], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` (the same total norm and factor, ``max_norm / (norm +
    1e-6)`` capped at 1) for gradients that may be row-sparse, which torch's version rejects: a
    sparse gradient is first replaced by its summed rows (:func:`summed_rows`, deterministic),
    whose norm is the gradient's norm. Without sparse gradients: torch's own (the same bits as
    before row-sparse gradients existed)."""
    parameters = [p for p in parameters if p.grad is not None]
    if not any(p.grad.is_sparse for p in parameters):
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return
    grads = []
    for param in parameters:
        if param.grad.is_sparse:
            rows, values = summed_rows(param.grad)
            param.grad = torch.sparse_coo_tensor(
                rows.unsqueeze(0), values, param.shape, is_coalesced=True, check_invariants=False
            )
            grads.append(param.grad._values())
        else:
            grads.append(param.grad)
    norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
    factor = (max_norm / (torch.linalg.vector_norm(norms) + 1e-6)).clamp_(max=1.0)
    for grad in grads:
        grad.mul_(factor)
