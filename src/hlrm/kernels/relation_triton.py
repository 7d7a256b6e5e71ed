"""A fused Triton kernel for HLR / HLR++ scoring (models spec, sections 3.5, 3.6 and 9).

One program scores one user against a block of items. Per pool slot it computes the slot logits
``(e_i ⊙ z_s) K`` (one ``tl.dot`` of the item block with ``z_s ⊙ K``), their softmax over the N
memory slots, the attention logit ``a · (M u)``, and folds the slot into a running softmax over
the pool (the online softmax of flash attention: running maximum, running sum, running mixture
of addresses). HLR++ adds its item attention the same way over ``[t; x_1..x_P]`` (the history
addresses are item-independent and precomputed). The distance is the quadratic form
``||u - i||² + 2 b·(M u) - 2 b·(M i) + bᵀ (M Mᵀ) b`` on the (items, N) coefficients ``b``. Only
the (users, items) scores reach memory: nothing of size users × items × pool × slots exists.

``β``-attention is exact: ``exp(w_s - β·logsumexp(w))`` = running mixture × ``exp((1-β) m) /
l^β`` with m, l the running maximum and sum. Products use IEEE float32 by default;
``HLRM_TRITON_PRECISION=tf32`` (TF32 tensor cores) or ``bf16`` (bfloat16 operands, float32
accumulation) trade exactness for speed on NVIDIA GPUs, to be measured against the exact lists
(``benchmarks/scoring.py --triton-precision``); everything outside the three products stays
float32.

Runs on CUDA, and on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``, set before this
module is imported), which is how ``tests/test_triton_scoring.py`` checks it against the plain
scorer in CI without a GPU.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from hlrm.models.relation_scoring import Prepared, RelationProblem

#: Items per program. 64 keeps the (items, d) block and the (items, N) running state in
#: registers for d <= 128 on current NVIDIA GPUs; the interpreter uses 16 (fewer wasted lanes).
BLOCK_ITEMS = 64
PRECISIONS = ("ieee", "tf32", "bf16")


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, NATIVE_BF16: tl.constexpr):
    """``a @ b`` in float32 (IEEE or TF32 products), or with bfloat16 operands (``bf16``: the
    tensor cores' fastest input, float32 accumulation). Triton 3.9's interpreter multiplies
    bfloat16 blocks wrongly (values ~1e10 off), so there (``NATIVE_BF16`` false) the operands
    are rounded to bfloat16 and multiplied in float32: the same products up to the summation
    order."""
    if PRECISION == "bf16":
        if NATIVE_BF16:
            return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), out_dtype=tl.float32)
        a = a.to(tl.bfloat16).to(tl.float32)
        b = b.to(tl.bfloat16).to(tl.float32)
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _relation_scores_kernel(
    items_ptr,
    user_ptr,
    pool_ptr,
    pool_mask_ptr,
    keys_ptr,
    gram_ptr,
    query_ptr,
    user_side_ptr,
    item_side_ptr,
    user_sq_ptr,
    item_sq_ptr,
    history_ptr,
    item_mask_ptr,
    item_logit_side_ptr,
    out_ptr,
    n_items,
    dim,
    n_slots,
    width,
    beta,
    HLRPP: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
    NATIVE_BF16: tl.constexpr,
):
    # int64: user * n_items passes 2^31 for ~50k users × 50k items (all of a large catalogue).
    user = tl.program_id(0).to(tl.int64)
    offs_i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    in_i = offs_i < n_items
    in_d = offs_d < dim
    in_n = offs_n < n_slots
    items = tl.load(
        items_ptr + offs_i[:, None] * dim + offs_d[None, :],
        mask=in_i[:, None] & in_d[None, :],
        other=0.0,
    )
    keys = tl.load(
        keys_ptr + offs_d[:, None] * n_slots + offs_n[None, :],
        mask=in_d[:, None] & in_n[None, :],
        other=0.0,
    )
    query = tl.load(query_ptr + user * n_slots + offs_n, mask=in_n, other=0.0)
    slot_bias = tl.where(in_n, 0.0, float("-inf"))  # padded memory slots get no weight

    # User attention over the pool: running max / sum / mixture of the slot addresses.
    peak = tl.full((BLOCK_I,), float("-inf"), tl.float32)
    total = tl.zeros((BLOCK_I,), tl.float32)
    mixture = tl.zeros((BLOCK_I, BLOCK_N), tl.float32)
    for slot in range(width):
        valid = tl.load(pool_mask_ptr + user * width + slot) != 0
        z = tl.load(pool_ptr + (user * width + slot) * dim + offs_d, mask=in_d, other=0.0)
        logits = _dot(items * z[None, :], keys, PRECISION, NATIVE_BF16)
        logits = logits + slot_bias[None, :]
        exponentials = tl.exp(logits - tl.max(logits, 1)[:, None])
        address = exponentials / tl.sum(exponentials, 1)[:, None]
        weight_logit = tl.sum(address * query[None, :], 1)
        weight_logit = tl.where(valid, weight_logit, float("-inf"))
        new_peak = tl.maximum(peak, weight_logit)
        safe = tl.where(new_peak == float("-inf"), 0.0, new_peak)
        decay = tl.exp(peak - safe)
        fresh = tl.exp(weight_logit - safe)
        total = total * decay + fresh
        mixture = mixture * decay[:, None] + fresh[:, None] * address
        peak = new_peak
    safe_peak = tl.where(peak == float("-inf"), 0.0, peak)
    scale = tl.where(
        total > 0, tl.exp((1.0 - beta) * safe_peak - beta * tl.log(tl.maximum(total, 1e-30))), 0.0
    )
    coefficients = mixture * scale[:, None]

    user_vector = tl.load(user_ptr + user * dim + offs_d, mask=in_d, other=0.0)
    item_side = tl.load(
        item_side_ptr + offs_i[:, None] * n_slots + offs_n[None, :],
        mask=in_i[:, None] & in_n[None, :],
        other=0.0,
    )
    if HLRPP:
        # Item attention over [t; x_1..x_P]: the target's address, then the history's.
        target_logits = _dot(items * user_vector[None, :], keys, PRECISION, NATIVE_BF16)
        target_logits = target_logits + slot_bias[None, :]
        target = tl.exp(target_logits - tl.max(target_logits, 1)[:, None])
        target = target / tl.sum(target, 1)[:, None]
        side = tl.load(
            item_logit_side_ptr + offs_i[:, None] * n_slots + offs_n[None, :],
            mask=in_i[:, None] & in_n[None, :],
            other=0.0,
        )
        item_peak = tl.sum(target * side, 1)  # the target slot is always valid
        item_total = tl.full((BLOCK_I,), 1.0, tl.float32)
        item_mixture = target
        for slot in range(width):
            valid = tl.load(item_mask_ptr + user * width + slot) != 0
            address = tl.load(
                history_ptr + (user * width + slot) * n_slots + offs_n, mask=in_n, other=0.0
            )
            logit = tl.where(valid, tl.sum(side * address[None, :], 1), float("-inf"))
            new_peak = tl.maximum(item_peak, logit)
            decay = tl.exp(item_peak - new_peak)
            fresh = tl.exp(logit - new_peak)
            item_total = item_total * decay + fresh
            item_mixture = item_mixture * decay[:, None] + fresh[:, None] * address[None, :]
            item_peak = new_peak
        item_scale = tl.exp((1.0 - beta) * item_peak - beta * tl.log(item_total))
        coefficients = coefficients + item_mixture * item_scale[:, None]

    user_side = tl.load(user_side_ptr + user * n_slots + offs_n, mask=in_n, other=0.0)
    cross = tl.sum(coefficients * (user_side[None, :] - item_side), 1)
    gram = tl.load(
        gram_ptr + offs_n[:, None] * n_slots + offs_n[None, :],
        mask=in_n[:, None] & in_n[None, :],
        other=0.0,
    )
    quadratic = tl.sum(_dot(coefficients, gram, PRECISION, NATIVE_BF16) * coefficients, 1)
    dots = tl.sum(items * user_vector[None, :], 1)
    user_sq = tl.load(user_sq_ptr + user)
    item_sq = tl.load(item_sq_ptr + offs_i, mask=in_i, other=0.0)
    squared = tl.maximum(user_sq + item_sq - 2.0 * dots, 0.0)
    distance = tl.maximum(squared + 2.0 * cross + quadratic, 0.0)
    tl.store(out_ptr + user * n_items + offs_i, -distance, mask=in_i)


def _block(size: int) -> int:
    """Power of two >= max(size, 16): ``tl.arange`` and ``tl.dot`` need it."""
    return max(16, triton.next_power_of_2(max(size, 1)))


def precision() -> str:
    """``HLRM_TRITON_PRECISION``: ``ieee`` (default, exact float32 products), ``tf32`` or
    ``bf16``."""
    chosen = os.environ.get("HLRM_TRITON_PRECISION", "ieee").strip().lower() or "ieee"
    if chosen not in PRECISIONS:
        from hlrm.errors import ConfigError

        raise ConfigError(f"HLRM_TRITON_PRECISION must be one of {PRECISIONS}, not {chosen!r}")
    return chosen


@torch.no_grad()
def triton_scores(problem: RelationProblem, block_items: int | None = None) -> Tensor:
    """Scores (U, I) of ``problem`` by the fused kernel: equal to
    :func:`hlrm.models.relation_scoring.plain_scores` up to float rounding."""
    prep = Prepared(problem)
    n_users, n_items = problem.n_users, problem.n_items
    dim, n_slots, width = problem.user.shape[1], problem.n_slots, problem.pool_width
    out = problem.items.new_empty(n_users, n_items, dtype=torch.float32)
    if n_users == 0 or n_items == 0:
        return out.to(problem.items.dtype)
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    block_i = block_items or (16 if interpreted else BLOCK_ITEMS)
    hlrpp = problem.kind == "hlr++"
    empty = problem.items.new_zeros(1)

    def dense(tensor: Tensor) -> Tensor:
        return tensor.to(torch.float32).contiguous()

    pool_mask = problem.pool_mask.to(torch.int8).contiguous()
    if hlrpp:
        history, item_mask = dense(prep.history_addresses), problem.item_mask.to(torch.int8)
        item_logit_side = dense(prep.item_logit_side)
    else:
        history, item_mask, item_logit_side = empty, pool_mask, empty
    grid = (n_users, triton.cdiv(n_items, block_i))
    _relation_scores_kernel[grid](
        dense(problem.items),
        dense(problem.user),
        dense(problem.pool),
        pool_mask,
        dense(problem.keys),
        dense(prep.gram),
        dense(prep.query),
        dense(prep.user_side),
        dense(prep.item_side),
        dense(prep.user_sq),
        dense(prep.item_sq),
        history,
        item_mask.contiguous(),
        item_logit_side,
        out,
        n_items,
        dim,
        n_slots,
        width,
        float(problem.beta),
        HLRPP=hlrpp,
        BLOCK_I=block_i,
        BLOCK_D=_block(dim),
        BLOCK_N=_block(n_slots),
        PRECISION=precision(),
        NATIVE_BF16=not interpreted,
    )
    return out.to(problem.items.dtype)
