"""The fused Triton kernel of HLR / HLR++ scoring (hlrm.kernels.relation_triton), run on the CPU
by Triton's interpreter: the same scores (to float32 rounding) and the same top-10 lists as the
plain scorer, on small shapes. Skipped where triton is not installed (the ``gpu`` extra); CI
installs it.

``TRITON_INTERPRET=1`` must be set before triton itself is imported (its language functions are
made interpretable then), so :func:`test_kernel_under_the_interpreter` runs the kernel tests of
this file in a child pytest with it set; run directly with it set, they run in-process."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from hlrm.evaluation.ranking import top_items
from hlrm.models import History, create_model

pytest.importorskip("triton")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
in_interpreter = pytest.mark.skipif(
    not INTERPRETED, reason="runs in the child of test_kernel_under_the_interpreter"
)
N_USERS, N_ITEMS = 5, 70
CONFIGS = [
    ("hlr", {}),
    ("hlr", {"beta": 0.5, "address_scale": 20.0, "attention_scale": 3.0}),
    ("hlr++", {}),
    ("hlr++", {"padding_quirk": True, "beta": 2.0}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in options.items()) for name, options in CONFIGS]


@pytest.fixture(scope="module")
def kernel():
    from hlrm.kernels import relation_triton

    return relation_triton


def test_kernel_under_the_interpreter():
    if INTERPRETED:
        pytest.skip("already under the interpreter")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 7, result.stdout[-2000:]


def model_and_pools(name, options, seed=0, width=6):
    torch.manual_seed(seed)
    model = create_model(
        name, N_USERS, N_ITEMS, dim=12, n_slots=5, history_size=width, **options
    ).eval()
    with torch.no_grad():
        model.item_embeddings.mul_(torch.rand(N_ITEMS, 1) * 3)
    rng = np.random.default_rng(seed)
    items = torch.full((N_USERS, width), N_ITEMS, dtype=torch.long)
    for row, count in enumerate([0, 1, width // 2, width, width][:N_USERS]):
        items[row, :count] = torch.from_numpy(rng.choice(N_ITEMS, count, replace=False))
    return model, History(items, items != N_ITEMS)


@in_interpreter
@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
def test_kernel_equals_plain_scorer_and_its_lists(kernel, name, options):
    model, pools = model_and_pools(name, options)
    users = torch.arange(N_USERS)
    model.scoring_backend = "plain"
    plain = model.score(users, pools)
    fused = kernel.triton_scores(model.relation_problem(users, pools))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for k in (1, 10):
        assert torch.equal(top_items(fused, k)[1], top_items(plain, k)[1])
    model.scoring_backend = "triton"  # through the model's interface, on an item subset
    subset = torch.tensor([69, 3, 40, 7])
    torch.testing.assert_close(model.score(users, pools, items=subset), plain[:, subset])


@in_interpreter
def test_kernel_with_empty_pools_and_block_edges(kernel):
    for name in ("hlr", "hlr++"):
        model, pools = model_and_pools(name, {}, width=0)
        users = torch.arange(N_USERS)
        model.scoring_backend = "plain"
        plain = model.score(users, pools)
        problem = model.relation_problem(users, pools)
        for block in (16, 32):  # 70 items: a partial last block either way
            fused = kernel.triton_scores(problem, block_items=block)
            torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


@in_interpreter
def test_bf16_products_stay_close(kernel, monkeypatch):
    """bfloat16 operands (8-bit mantissa) in the three products: scores within 1e-1 of the exact
    ones here; on a GPU, how many lists change is measured (benchmarks/scoring.py)."""
    model, pools = model_and_pools("hlr++", {})
    problem = model.relation_problem(torch.arange(N_USERS), pools)
    exact = kernel.triton_scores(problem)
    monkeypatch.setenv("HLRM_TRITON_PRECISION", "bf16")
    rough = kernel.triton_scores(problem)
    assert not torch.equal(rough, exact)  # the setting reaches the kernel
    torch.testing.assert_close(rough, exact, rtol=0.0, atol=1e-1)


@in_interpreter
def test_precision_setting(kernel, monkeypatch):
    from hlrm.errors import ConfigError

    for chosen in ("tf32", "bf16", "ieee"):
        monkeypatch.setenv("HLRM_TRITON_PRECISION", chosen)
        assert kernel.precision() == chosen
    monkeypatch.setenv("HLRM_TRITON_PRECISION", "bf17")
    with pytest.raises(ConfigError, match="HLRM_TRITON_PRECISION"):
        kernel.precision()
