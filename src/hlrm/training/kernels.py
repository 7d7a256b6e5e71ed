"""A compiled training step for CML with the hinge loss and row-sparse Adam (``lazy_adam``).

PyTorch spends a CML step of 1,000 triplets mostly on per-operation overhead: about forty small
kernels (gathers, the loss and its autograd graph, gradient scatters, the optimiser and the
projection), each costing more to launch than its arithmetic. Like ``implicit``'s BPR, this
step is one loop in compiled code (Numba, extra ``hlrm[fast]``) that touches only the rows the
batch uses: the hinge terms of every (user, positive, negative) triplet, their gradients summed
per row, Adam on those rows and the unit-ball projection of those rows.

It computes what the PyTorch path of ``optimizer="lazy_adam"`` computes (the model's loss, its
autograd gradients, :class:`~hlrm.training.optim.LazyAdam`, the projection of the moved rows)
with the same elementwise operations in float32, on the same batches; only sums (the distances,
the norms, a row's gradient over its occurrences) may add in a different order, so results are
identical where those sums are exact (tests/test_fast_training.py checks bit-for-bit) and equal
up to rounding elsewhere. The kernel runs on one thread and in a fixed order: same seed, same
bits. Used by :class:`~hlrm.training.trainer.Trainer` when :func:`fused_cml_step` accepts the
configuration; everything else takes the PyTorch path.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor


def available() -> bool:
    """Whether the compiled step can run here (Numba, the extra ``hlrm[fast]``, is installed)."""
    return importlib.util.find_spec("numba") is not None


@functools.cache
def _compiled_step():
    """The step compiled by Numba (imported here, on first use: it takes a moment to load; the
    machine code is cached on disk after the first compilation)."""
    import numba

    # error_model="numpy": IEEE division (no Python zero-division branch, which kept LLVM from
    # vectorising the Adam loop); no fast-math flag except reassociation in the distance sums
    jit = numba.njit(cache=True, nogil=True, error_model="numpy")
    globals()["_squared_distance"] = numba.njit(
        cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"}
    )(_squared_distance)
    globals()["_squared_norm"] = numba.njit(
        cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"}
    )(_squared_norm)
    globals()["_adam_rows"] = jit(_adam_rows)
    globals()["_project_rows"] = jit(_project_rows)
    return jit(_hinge_lazy_adam)


def _hinge_lazy_adam(
    users_table,
    items_table,
    users_m,
    users_v,
    items_m,
    items_v,
    users,
    positives,
    negatives,
    margin,
    gradient_scale,
    beta1,
    beta2,
    one_minus_beta1,
    one_minus_beta2,
    step_size,
    correction_sqrt,
    eps,
    max_norm,
    project,
    user_slot,
    item_slot,
    user_rows,
    item_rows,
    user_grads,
    item_grads,
):
    """One step; returns the sum of the hinge terms (float64). Every float argument is float32
    and every operation on table values is a float32 operation, in the order of the PyTorch
    path. ``user_slot``/``item_slot`` (-1 everywhere on entry and on return) map a table row to
    its row in ``*_grads``; ``*_rows`` list the moved rows in first-use order."""
    n_rows, k = negatives.shape
    dim = users_table.shape[1]
    two = np.float32(2.0)
    zero = np.float32(0.0)
    n_users = 0
    n_items = 0
    # slots of every row the batch uses, gradients zeroed
    for b in range(n_rows):
        u = users[b]
        if user_slot[u] < 0:
            user_slot[u] = n_users
            user_rows[n_users] = u
            user_grads[n_users, :] = zero
            n_users += 1
        p = positives[b]
        if item_slot[p] < 0:
            item_slot[p] = n_items
            item_rows[n_items] = p
            item_grads[n_items, :] = zero
            n_items += 1
        for j in range(k):
            n = negatives[b, j]
            if item_slot[n] < 0:
                item_slot[n] = n_items
                item_rows[n_items] = n
                item_grads[n_items, :] = zero
                n_items += 1
    total = 0.0
    for b in range(n_rows):
        u = users[b]
        p = positives[b]
        su = user_slot[u]
        sp = item_slot[p]
        positive = _squared_distance(users_table[u], items_table[p])
        # d loss / d positive distance: the scale times the number of violated margins
        positive_grad = zero
        for j in range(k):
            n = negatives[b, j]
            negative = _squared_distance(users_table[u], items_table[n])
            violation = positive - negative + margin
            if violation > zero:
                total += violation
                positive_grad += gradient_scale
                sn = item_slot[n]
                for t in range(dim):
                    # d negative / d (u - n) = 2 (u - n), with weight -scale
                    term = -gradient_scale * (two * (users_table[u, t] - items_table[n, t]))
                    user_grads[su, t] += term
                    item_grads[sn, t] -= term
        if positive_grad != zero:
            for t in range(dim):
                term = positive_grad * (two * (users_table[u, t] - items_table[p, t]))
                user_grads[su, t] += term
                item_grads[sp, t] -= term
    _adam_rows(
        users_table, users_m, users_v, user_rows, user_grads, n_users,
        beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, correction_sqrt, eps,
    )  # fmt: skip
    _adam_rows(
        items_table, items_m, items_v, item_rows, item_grads, n_items,
        beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, correction_sqrt, eps,
    )  # fmt: skip
    if project:
        _project_rows(users_table, user_rows, n_users, max_norm)
        _project_rows(items_table, item_rows, n_items, max_norm)
    for s in range(n_users):
        user_slot[user_rows[s]] = -1
    for s in range(n_items):
        item_slot[item_rows[s]] = -1
    return total


def _squared_distance(a, b):
    """``||a - b||²`` in float32; its additions may be reordered (vectorised)."""
    total = np.float32(0.0)
    for t in range(a.shape[0]):
        diff = a[t] - b[t]
        total += diff * diff
    return total


def _squared_norm(a):
    """``||a||²`` in float32; its additions may be reordered (vectorised)."""
    total = np.float32(0.0)
    for t in range(a.shape[0]):
        total += a[t] * a[t]
    return total


def _adam_rows(
    table, exp_avg, exp_avg_sq, rows, grads, n_rows,
    beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, correction_sqrt, eps,
):  # fmt: skip
    """:func:`hlrm.training.optim._adam_update` on the listed rows, operation for operation."""
    for s in range(n_rows):
        r = rows[s]
        for t in range(table.shape[1]):
            g = grads[s, t]
            m = exp_avg[r, t] * beta1 + g * one_minus_beta1
            v = exp_avg_sq[r, t] * beta2 + (g * g) * one_minus_beta2
            exp_avg[r, t] = m
            exp_avg_sq[r, t] = v
            denominator = np.float32(np.sqrt(np.float64(v))) / correction_sqrt + eps
            table[r, t] = table[r, t] - (m / denominator) * step_size


def _project_rows(table, rows, n_rows, max_norm):
    """:func:`hlrm.models.base.project_rows_` on the listed rows."""
    one = np.float32(1.0)
    for s in range(n_rows):
        r = rows[s]
        factor = max_norm / np.sqrt(_squared_norm(table[r]))
        if factor < one:
            for t in range(table.shape[1]):
                table[r, t] = table[r, t] * factor


def supports(model: Any, config: Any, objective: Any) -> str | None:
    """Why the compiled step cannot train this configuration, or None when it can."""
    from hlrm.models.cml import CML
    from hlrm.training.losses import HingeObjective

    if config.optimizer != "lazy_adam":
        return "the optimizer is not lazy_adam"
    if not available():
        return "numba is not installed (pip install 'hlrm[fast]')"
    if type(model) is not CML or hasattr(model, "item_biases"):
        return "only plain CML has a compiled step"
    if not isinstance(objective, HingeObjective):
        return "only the hinge loss has a compiled step"
    if objective.negative_selection != "all" or objective.rank_weight:
        return "closest-negative selection and rank weights have no compiled step"
    if config.shared_negatives or config.negative_sampling != "uniform":
        return "shared or popularity-sampled negatives have no compiled step"
    if config.clip_grad > 0 or config.relation_weight_decay > 0:
        return "gradient clipping and relation_weight_decay have no compiled step"
    tables = (model.user_embeddings, model.item_embeddings)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tables):
        return "the compiled step runs on float32 CPU tables"
    if not all(t.requires_grad for t in tables):
        return "frozen tables have no compiled step"
    return None


class FusedCMLStep:
    """The compiled step bound to a model and its :class:`~hlrm.training.optim.LazyAdam`,
    whose state (moments, step counts) it reads and writes in place: checkpoints, resuming and
    switching between this and the PyTorch path see one optimiser."""

    def __init__(self, model: Any, optimizer: torch.optim.Optimizer, objective: Any) -> None:
        self.model = model
        self.optimizer = optimizer
        self.margin = np.float32(objective.margin)
        self.mean = objective.reduction == "mean"
        self.tables = (model.user_embeddings, model.item_embeddings)
        groups = [
            g
            for g in optimizer.param_groups
            if any(p is model.user_embeddings for p in g["params"])
        ]
        if not any(p is model.item_embeddings for p in groups[0]["params"]):
            raise ValueError("the user and item tables must share one parameter group")
        self.group = groups[0]
        self.user_slot = np.full(model.n_users, -1, dtype=np.int64)
        self.item_slot = np.full(model.n_items, -1, dtype=np.int64)
        self._buffers: dict[int, tuple[np.ndarray, ...]] = {}

    def _workspace(self, n_rows: int, k: int) -> tuple[np.ndarray, ...]:
        key = n_rows * (1 + k)
        if key not in self._buffers:
            dim = self.model.dim
            self._buffers = {
                key: (
                    np.empty(n_rows, dtype=np.int64),
                    np.empty(key, dtype=np.int64),
                    np.empty((n_rows, dim), dtype=np.float32),
                    np.empty((key, dim), dtype=np.float32),
                )
            }
        return self._buffers[key]

    def __call__(self, users: Tensor, positives: Tensor, negatives: Tensor) -> tuple[float, int]:
        """One step on a batch; returns (sum of the hinge terms, number of terms)."""
        state = []
        for table in self.tables:
            entry = self.optimizer.state[table]
            if not entry:
                entry["step"] = torch.tensor(0.0, dtype=torch.float32)
                entry["exp_avg"] = torch.zeros_like(table)
                entry["exp_avg_sq"] = torch.zeros_like(table)
            entry["step"] += 1
            state.append(entry)
        step = float(state[0]["step"])
        beta1, beta2 = self.group["betas"]
        n_rows, k = negatives.shape
        terms = n_rows * k
        scale = np.float32(1.0) / np.float32(terms) if self.mean else np.float32(1.0)
        first = step <= 1  # projects every row, below, as the PyTorch path's first step does
        user_rows, item_rows, user_grads, item_grads = self._workspace(n_rows, k)
        with torch.no_grad():
            total = _compiled_step()(
                self.tables[0].detach().numpy(),
                self.tables[1].detach().numpy(),
                state[0]["exp_avg"].numpy(),
                state[0]["exp_avg_sq"].numpy(),
                state[1]["exp_avg"].numpy(),
                state[1]["exp_avg_sq"].numpy(),
                users.numpy(),
                positives.numpy(),
                np.ascontiguousarray(negatives.numpy()),
                self.margin,
                scale,
                np.float32(beta1),
                np.float32(beta2),
                np.float32(1 - beta1),
                np.float32(1 - beta2),
                np.float32(self.group["lr"] / (1 - beta1**step)),
                np.float32(math.sqrt(1 - beta2**step)),
                np.float32(self.group["eps"]),
                np.float32(self.model.max_norm),
                self.model.max_norm > 0 and not first,
                self.user_slot,
                self.item_slot,
                user_rows,
                item_rows,
                user_grads,
                item_grads,
            )
        if first:
            self.model.after_step()
        # what optimizer.step() records for learning-rate schedulers (which warn without it)
        self.optimizer._opt_called = True
        return float(total), terms
