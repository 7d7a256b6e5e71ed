"""Building blocks of the relational models: masked β-attention, padding masks, the memory."""

import pytest
import torch

from hlrm.errors import ConfigError
from hlrm.models.memory import RelationMemory, admit_first_padding, masked_attention


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_masked_attention_equals_naive_formula(beta):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 9, generator=generator, dtype=torch.float64) * 3
    mask = torch.rand(4, 3, 9, generator=generator) < 0.6
    mask[0, 0] = False  # a row without any valid slot
    mask[1, 1] = True
    naive = torch.exp(logits) * mask
    naive = naive / naive.sum(-1, keepdim=True).pow(beta)
    naive[0, 0] = 0.0
    weights = masked_attention(logits, mask, beta)
    torch.testing.assert_close(weights, naive, rtol=1e-12, atol=1e-12)
    assert torch.all(weights[~mask] == 0)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_masked_attention_gradient_equals_the_naive_formulas(beta):
    """Also for rows whose normaliser is exactly 1: one valid slot, or the others underflowing
    (torch >= 2.14 passes no gradient through clamp at its bound; the normaliser must not
    depend on that convention)."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, 9, generator=generator, dtype=torch.float64)
    logits[2, 0, 1] = 800.0  # exp(w - peak) underflows to 0 for every other slot of this row
    mask = torch.rand(4, 3, 9, generator=generator) < 0.6
    mask[1, :] = False
    mask[1, :, 4] = True  # rows with exactly one valid slot
    mask[2, 0, 1] = True
    mask[3, 2] = False  # a row without any valid slot
    upstream = torch.randn(4, 3, 9, generator=generator, dtype=torch.float64)

    def naive(values):  # row by row: exp(w_j - β logsumexp(valid w)) on the valid slots
        rows = []
        for row, valid in zip(values.reshape(-1, 9), mask.reshape(-1, 9), strict=True):
            kept = row[valid]
            weights = torch.exp(kept - beta * torch.logsumexp(kept, 0)) if len(kept) else kept
            rows.append(torch.zeros_like(row).masked_scatter(valid, weights))
        return torch.stack(rows).view_as(values)

    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    (masked_attention(ours, mask, beta) * upstream).sum().backward()
    (naive(theirs) * upstream).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-10, atol=1e-12)
    if beta == 1.0:  # a softmax over one slot is constant
        assert torch.all(ours.grad[1] == 0)


def test_masked_attention_is_stable_and_nan_free():
    logits = torch.tensor([[1000.0, 999.0, -5.0], [0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    weights = masked_attention(logits, mask)
    torch.testing.assert_close(weights[0].sum(), torch.tensor(1.0))
    assert torch.all(weights[1] == 0)
    weights.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_masked_attention_broadcasts_mask_and_accepts_empty_pools():
    logits = torch.randn(5, 2, 4)
    mask = torch.tensor([[True, False, True, True], [False, False, False, False]])
    weights = masked_attention(logits, mask)
    torch.testing.assert_close(weights[:, 0].sum(-1), torch.ones(5))
    assert torch.all(weights[:, 1] == 0)
    assert masked_attention(torch.randn(3, 0), torch.ones(3, 0, dtype=torch.bool)).shape == (3, 0)


def test_admit_first_padding_admits_exactly_one_padded_slot():
    mask = torch.tensor(
        [[True, True, False, False], [True, True, True, True], [False, False, False, False]]
    )
    expected = torch.tensor(
        [[True, True, True, False], [True, True, True, True], [True, False, False, False]]
    )
    assert torch.equal(admit_first_padding(mask), expected)


def test_memory_addresses_sum_to_one_and_relations_mix_slots():
    memory = RelationMemory(dim=6, n_slots=4)
    a, b = torch.randn(3, 1, 6), torch.randn(5, 6)
    weights = memory.address(a, b)
    assert weights.shape == (3, 5, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5))
    torch.testing.assert_close(memory.relation(a, b), weights @ memory.memory)
    # the relation only depends on a ⊙ b
    torch.testing.assert_close(memory.address(a * 2, b / 2), weights)


@pytest.mark.parametrize(
    ("clip", "key_entry"), [("none", 3.0), ("slots", 2**-0.5), ("parity", 8**-0.5)]
)
def test_memory_clipping_modes(clip, key_entry):
    # K is d × N = 2 × 8 of threes: key vectors (columns) have 2 entries, coordinate rows 8.
    memory = RelationMemory(dim=2, n_slots=8, clip=clip)
    with torch.no_grad():
        memory.keys.fill_(3.0)
        memory.memory.fill_(3.0)
    memory.clip_(1.0)
    torch.testing.assert_close(memory.keys, torch.full((2, 8), key_entry))
    slot_entry = 3.0 if clip == "none" else 2**-0.5
    torch.testing.assert_close(memory.memory, torch.full((8, 2), slot_entry))


def test_memory_rejects_unknown_clip_mode():
    with pytest.raises(ConfigError):
        RelationMemory(dim=4, clip="rows")
