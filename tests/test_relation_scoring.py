"""The tiled HLR / HLR++ scorer (hlrm.models.relation_scoring) and its per-machine tile choice
(hlrm.models.tiling): scores bit-identical whatever the tiles, the user blocks or the item
subset, so the measured choice can never change a ranking; the autotune's cache and switches."""

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hlrm.errors import ConfigError
from hlrm.evaluation.ranking import top_k
from hlrm.models import History, create_model, hlr, tiling
from hlrm.models.relation_scoring import resolve_backend, stable_mm
from hlrm.training.history import HistorySampler

N_USERS, N_ITEMS = 23, 150
CONFIGS = [
    ("hlr", {}),
    ("hlr", {"beta": 0.5, "address_scale": 30.0}),
    ("hlr++", {}),
    ("hlr++", {"padding_quirk": True, "attention_scale": 3.0}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in options.items()) for name, options in CONFIGS]
TILES = [(23, 150), (3, 7), (4, 256), (8, 128), (5, 33)]


def model_and_pools(name, options, *, dim=12, n_slots=6, history_size=9, seed=0):
    torch.manual_seed(seed)
    model = create_model(
        name, N_USERS, N_ITEMS, dim=dim, n_slots=n_slots, history_size=history_size, **options
    )
    with torch.no_grad():  # trained-looking tables: a spread of norms inside the ball
        model.item_embeddings.mul_(torch.rand(N_ITEMS, 1) * 3)
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, history_size + 1, N_USERS)
    items = torch.full((N_USERS, history_size), N_ITEMS, dtype=torch.long)
    for row, count in enumerate(counts):
        items[row, :count] = torch.from_numpy(rng.choice(N_ITEMS, count, replace=False))
    return model.eval(), History(items, items != N_ITEMS)


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
def test_scores_bit_identical_across_tiles_blocks_and_subsets(name, options):
    model, pools = model_and_pools(name, options)
    users = torch.arange(N_USERS)
    reference = None
    for tiles in TILES:
        model.scoring_tiles = tiles
        scores = model.score(users, pools)
        if reference is None:
            reference = scores
        assert torch.equal(scores, reference), tiles
    torch.testing.assert_close(reference, hlr.broadcast_scores(model, users, pools))
    model.scoring_tiles = (2, 64)
    for block in (1, 5, 8):  # users scored in blocks, as top_k and the pruned path do
        for start in range(0, N_USERS, block):
            rows = slice(start, start + block)
            part = model.score(users[rows], History(pools.items[rows], pools.mask[rows]))
            assert torch.equal(part, reference[rows]), (block, start)
    for subset in ([3], [140, 2, 77], list(range(0, N_ITEMS, 7))):
        items = torch.tensor(subset)
        assert torch.equal(model.score(users, pools, items=items), reference[:, items]), subset


@pytest.mark.parametrize("name", ["hlr", "hlr++"])
def test_lists_identical_across_tiles_and_budgets(name):
    model, _ = model_and_pools(name, {})
    rng = np.random.default_rng(1)
    train = sp.csr_matrix((rng.random((N_USERS, N_ITEMS)) < 0.1).astype(np.float32))
    sampler = HistorySampler(train, model.history_size, "random", "cpu", keyed_seed=3)
    users = np.arange(N_USERS)
    lists = []
    for tiles, budget in (((1, 16), None), ((8, 128), None), (None, 0.01), (None, 64.0)):
        model.scoring_tiles = tiles
        lists.append(
            top_k(model, users, train, 10, history_sampler=sampler, prune=False, memory_mib=budget)
        )
    for other in lists[1:]:
        np.testing.assert_array_equal(other, lists[0])


def test_stable_mm_pads_small_products():
    a, b = torch.randn(40, 30), torch.randn(30, 50)
    full = a @ b
    assert torch.equal(stable_mm(a[:3], b[:, :5]), stable_mm(a, b)[:3, :5])
    assert torch.equal(stable_mm(a, b), full)
    assert stable_mm(a[:0], b).shape == (0, 50)


def test_autotune_measures_once_and_caches_per_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("HLRM_AUTOTUNE", "1")
    monkeypatch.setenv("HLRM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiling, "_chosen", {})
    monkeypatch.setattr(tiling, "MEASURE_SHAPE", (8, 256))
    model, pools = model_and_pools("hlr", {})
    model.score(torch.arange(4), History(pools.items[:4], pools.mask[:4]))
    stored = json.loads((tmp_path / tiling.CACHE_FILE).read_text())
    (key,) = stored
    assert tiling.cpu_model() in key and "|hlr|d=12|S=10|N=6|float32|" in key
    assert tuple(stored[key]["tiles"]) in tiling.CANDIDATES
    assert set(stored[key]["seconds"]) == {f"{u}x{i}" for u, i in tiling.CANDIDATES}

    def no_measurement(*args, **kwargs):
        raise AssertionError("the cached choice should have been used")

    monkeypatch.setattr(tiling, "measure", no_measurement)
    monkeypatch.setattr(tiling, "_chosen", {})  # a new process: only the file remains
    model.score(torch.arange(4), History(pools.items[:4], pools.mask[:4]))


def test_autotune_switches(monkeypatch, tmp_path):
    monkeypatch.setenv("HLRM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tiling, "_chosen", {})
    model, pools = model_and_pools("hlr++", {})
    monkeypatch.setattr(tiling, "measure", lambda *a, **k: pytest.fail("measured"))
    monkeypatch.setenv("HLRM_AUTOTUNE", "0")
    model.score(torch.arange(3), History(pools.items[:3], pools.mask[:3]))
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv("HLRM_AUTOTUNE", "1")
    model.block_elements = 50  # nothing but one user and a few items fits: nothing to measure
    model.score(torch.arange(3), History(pools.items[:3], pools.mask[:3]))
    assert not (tmp_path / "cache").exists()


def test_cache_dir_defaults_outside_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("HLRM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tiling.cache_dir() == tmp_path / "hlrm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert tiling.cache_dir().parts[-2:] == (".cache", "hlrm")


def test_backend_choice(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("HLRM_SCORING_BACKEND", raising=False)
    assert resolve_backend("auto", cpu) == "plain"
    assert resolve_backend("plain", torch.device("cuda")) == "plain"
    monkeypatch.setenv("HLRM_SCORING_BACKEND", "plain")
    assert resolve_backend("auto", torch.device("cuda")) == "plain"
    with pytest.raises(ConfigError, match="scoring backend"):
        resolve_backend("fast", cpu)


def test_cpu_scoring_never_imports_triton():
    code = (
        "import sys, torch; from hlrm.models import History, create_model; "
        "m = create_model('hlr++', 4, 30, dim=8, n_slots=4, history_size=3); "
        "h = History(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool)); "
        "m.score(torch.arange(2), h); print('triton' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"
