"""The fast training options: row-sparse Adam (``optimizer="lazy_adam"``), projection of the moved
rows only, and the compiled CML step that reproduces the PyTorch path."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hlrm.data.matrix import SplitData
from hlrm.errors import ConfigError
from hlrm.models import create_model
from hlrm.models.base import project_rows_
from hlrm.training import kernels
from hlrm.training.optim import LazyAdam
from hlrm.training.trainer import TrainConfig, Trainer, epoch_generator

needs_numba = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")
HINGE = {"loss": "hinge", "negatives": 1, "shared_negatives": False, "select_by": "valid_loss"}


@pytest.fixture(scope="module")
def synthetic() -> SplitData:
    """A small random split (300 users, 200 items, 12 items each; validation: 2 more each)."""
    rng = np.random.default_rng(0)
    n_users, n_items = 300, 200
    items = np.stack([rng.choice(n_items, 14, replace=False) for _ in range(n_users)])
    users = np.arange(n_users)

    def matrix(columns):
        rows = np.repeat(users, columns.shape[1])
        values = np.ones(rows.size, np.float32)
        return sp.csr_matrix((values, (rows, columns.ravel())), (n_users, n_items))

    empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    return SplitData(
        matrix(items[:, :12]), matrix(items[:, 12:]), empty, users, np.arange(n_items), "small"
    )


def test_lazy_adam_moves_only_the_rows_with_a_gradient():
    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(10, 4))
    dense = torch.nn.Parameter(torch.randn(3))
    before = table.detach().clone()
    optimizer = LazyAdam([table, dense], lr=0.1)
    for rows in ([1, 3, 3], [3, 7]):  # a duplicate row: its gradients add up
        optimizer.zero_grad()
        loss = torch.nn.functional.embedding(torch.tensor(rows), table, sparse=True).sum()
        (loss + dense.sum()).backward()
        optimizer.step()
    moved = sorted(set(torch.nonzero((table != before).any(1)).squeeze(1).tolist()))
    assert moved == [1, 3, 7]
    state = optimizer.state[table]
    assert torch.equal(state["exp_avg"][[0, 2, 4, 5, 6, 8, 9]], torch.zeros(7, 4))
    assert optimizer.touched[table].tolist() == [3, 7]
    assert float(state["step"]) == 2


def test_lazy_adam_equals_adam_when_every_row_has_a_gradient():
    torch.manual_seed(0)
    start = torch.randn(6, 5)
    grads = [torch.randn(6, 5) for _ in range(4)]
    results = []
    for sparse in (False, True):
        param = torch.nn.Parameter(start.clone())
        optimizer = (
            LazyAdam([param], lr=0.01, weight_decay=0.1)
            if sparse
            else torch.optim.Adam([param], lr=0.01, weight_decay=0.1, foreach=False)
        )
        for grad in grads:
            param.grad = grad.to_sparse(sparse_dim=1) if sparse else grad.clone()
            optimizer.step()
        results.append(param.detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_projecting_some_rows_gives_those_rows_what_the_whole_projection_gives():
    torch.manual_seed(0)
    table = torch.randn(20, 8) * torch.linspace(0.1, 3, 20).unsqueeze(1)
    whole, some = table.clone(), table.clone()
    rows = torch.tensor([0, 5, 12, 19])
    project_rows_(whole)
    project_rows_(some, rows=rows)
    assert torch.equal(some[rows], whole[rows])
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(some[untouched], table[untouched])


def test_an_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        TrainConfig(epochs=1, lr=1e-3, optimizer="sgd").for_model(
            create_model("cml", 2, 2)
        ).validate()


def small_model(name, split):
    options = {"history_size": 8} if name == "hlr" else {}
    return create_model(name, split.n_users, split.n_items, dim=16, **options)


def fit(split, name="cml", *, compiled=True, checkpoint_dir=None, epochs=2, **options):
    torch.manual_seed(0)
    model = small_model(name, split)
    config = TrainConfig(
        epochs=epochs, batch_size=500, device="cpu", patience=0, optimizer="lazy_adam", **options
    )
    previous = Trainer.use_compiled_steps
    Trainer.use_compiled_steps = compiled
    try:
        trainer = Trainer(model, split, config, progress=False, checkpoint_dir=checkpoint_dir)
        trainer.fit()
    finally:
        Trainer.use_compiled_steps = previous
    return model, trainer


@pytest.mark.parametrize(
    "name, options, compiled",
    [
        ("cml", HINGE, True),
        ("cml", {"select_by": "valid_loss", "negatives": 50}, False),
        ("hlr", {**HINGE, "pretrain": "none"}, False),
    ],
)
def test_lazy_adam_same_seed_same_bits_and_resume(synthetic, tmp_path, name, options, compiled):
    if compiled and not kernels.available():
        pytest.skip("numba is not installed")
    first, trainer = fit(synthetic, name, compiled=compiled, **options)
    assert (trainer._compiled is not None) == compiled
    second, _ = fit(synthetic, name, compiled=compiled, **options)
    for key, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[key]), key
    # one epoch, then the second resumed from last.pt == two epochs straight
    fit(synthetic, name, compiled=compiled, checkpoint_dir=tmp_path, epochs=1, **options)
    torch.manual_seed(0)
    model = small_model(name, synthetic)
    config = TrainConfig(
        epochs=2, batch_size=500, device="cpu", patience=0, optimizer="lazy_adam", **options
    )
    Trainer.use_compiled_steps, previous = compiled, Trainer.use_compiled_steps
    try:
        resumed = Trainer(model, synthetic, config, progress=False, checkpoint_dir=tmp_path)
        resumed.resume()
        resumed.fit()
    finally:
        Trainer.use_compiled_steps = previous
    for key, tensor in first.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[key]), key


def exact_split(n_users=8, n_items=16) -> SplitData:
    """Every user has three items: a tiny split for step-by-step comparisons."""
    rows = np.repeat(np.arange(n_users), 3)
    cols = (rows * 5 + np.tile([0, 1, 2], n_users)) % n_items
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), (n_users, n_items))
    empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    return SplitData(train, empty, empty, np.arange(n_users), np.arange(n_items), "exact")


def dyadic_(model, scale=8):
    """Table entries k / 32 with |k| < scale: every square, distance and gradient of the first
    step is exact in float32, so no summation order can change a bit; norms stay below 1."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for table in (model.user_embeddings, model.item_embeddings):
            table.copy_(torch.randint(-scale + 1, scale, table.shape, generator=generator) / 32)


def steps(split, compiled, n_steps, *, scale=8, reduction="mean"):
    torch.manual_seed(0)
    model = create_model("cml", split.n_users, split.n_items, dim=8)
    dyadic_(model, scale)
    config = TrainConfig(
        epochs=1, batch_size=8, lr=1e-2, device="cpu", patience=0, select_by="valid_loss",
        keep_start=False,
        optimizer="lazy_adam", loss="hinge", negatives=2, shared_negatives=False,
        reduction=reduction, margin=0.5,
    )  # fmt: skip
    previous = Trainer.use_compiled_steps
    Trainer.use_compiled_steps = compiled
    try:
        trainer = Trainer(model, split, config, progress=False)
    finally:
        Trainer.use_compiled_steps = previous
    assert (trainer._compiled is not None) == compiled
    losses = []
    batches = trainer.train_batches.epoch(epoch_generator(0, 1, trainer.device))
    for _ in range(n_steps):
        losses.append(trainer.train_step(next(batches)))
    state = trainer.optimizer.state
    moments = [state[p][key].clone() for p in trainer.optimizer.param_groups[0]["params"]
               for key in ("exp_avg", "exp_avg_sq")]  # fmt: skip
    return model, moments, losses


@needs_numba
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_compiled_cml_step_is_the_pytorch_step_bit_for_bit(reduction):
    """One step on exactly representable data: the same batch, loss, gradients, Adam moments,
    weights and projection, bit for bit."""
    split = exact_split()
    (torch_model, torch_moments, torch_loss) = steps(split, False, 1, reduction=reduction)
    (fast_model, fast_moments, fast_loss) = steps(split, True, 1, reduction=reduction)
    for key, tensor in torch_model.state_dict().items():
        assert torch.equal(tensor, fast_model.state_dict()[key]), key
    for a, b in zip(torch_moments, fast_moments, strict=True):
        assert torch.equal(a, b)
    assert torch_loss == fast_loss
    assert (torch_model.user_embeddings.detach() != dyadic_copy(split)).any()  # it moved


def dyadic_copy(split):
    torch.manual_seed(0)
    model = create_model("cml", split.n_users, split.n_items, dim=8)
    dyadic_(model)
    return model.user_embeddings.detach()


@needs_numba
def test_the_compiled_cml_step_follows_the_pytorch_path_over_many_steps():
    """Later steps start from inexact values, so sums in another order may round differently;
    over many steps (rows on and outside the ball, the projection of moved rows) the two paths
    stay equal up to float32 rounding."""
    split = exact_split(12, 40)
    torch_model, torch_moments, torch_losses = steps(split, False, 4, scale=40)
    fast_model, fast_moments, fast_losses = steps(split, True, 4, scale=40)
    for key, tensor in torch_model.state_dict().items():
        torch.testing.assert_close(fast_model.state_dict()[key], tensor, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast_losses, torch_losses, rtol=1e-5)
    assert torch_model.user_embeddings.norm(dim=1).max() <= 1 + 1e-6


def test_the_compiled_step_declines_what_it_does_not_compute(synthetic):
    model = create_model("cml", synthetic.n_users, synthetic.n_items, dim=8)
    config = TrainConfig(epochs=1, optimizer="lazy_adam").for_model(model)  # softmax, shared
    from hlrm.training.losses import make_objective

    objective = make_objective("softmax")
    assert kernels.supports(model, config, objective) is not None
    dense = TrainConfig(epochs=1, **HINGE).for_model(model)
    assert "lazy_adam" in kernels.supports(model, dense, make_objective("hinge"))


def test_clipping_row_sparse_gradients_clips_what_dense_clipping_clips():
    """--clip with lazy_adam: the same factor as torch's clipping of the dense gradients."""
    from hlrm.training.optim import clip_grad_norm_

    torch.manual_seed(0)
    start, other = torch.randn(10, 4), torch.randn(3)
    clipped = []
    for sparse in (True, False):
        table, dense = torch.nn.Parameter(start.clone()), torch.nn.Parameter(other.clone())
        index = torch.tensor([1, 3, 3, 7])
        gathered = torch.nn.functional.embedding(index, table, sparse=sparse)
        (gathered.pow(2).sum() * 5 + dense.sum()).backward()
        (clip_grad_norm_ if sparse else torch.nn.utils.clip_grad_norm_)([table, dense], 1.0)
        clipped.append((table.grad.to_dense(), dense.grad))
    for a, b in zip(*clipped, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.linalg.vector_norm(torch.cat([g.flatten() for g in clipped[0]])) <= 1 + 1e-5


def test_compile_trains_what_eager_trains(synthetic, monkeypatch):
    """compile = true: the loss goes through torch.compile (here its "eager" backend: the same
    graph capture, no code generation, so the same bits); the epoch's last, smaller batch runs
    eagerly instead of compiling a second graph."""
    monkeypatch.setattr(Trainer, "compile_backend", "eager")
    models = []
    for compile_loss in (False, True):
        torch.manual_seed(0)
        model = small_model("hlr", synthetic)
        config = TrainConfig(
            epochs=1, batch_size=1000, device="cpu", patience=0, compile=compile_loss,
            **HINGE, pretrain="none",
        )  # fmt: skip
        trainer = Trainer(model, synthetic, config, progress=False)
        trainer.fit()
        models.append(model)
        if compile_loss:  # 3600 pairs: three full batches compiled, the last one eager
            assert trainer._compiled_shapes[0] == (1000,)
    for key, tensor in models[0].state_dict().items():
        assert torch.equal(tensor, models[1].state_dict()[key]), key


def test_compile_with_lazy_adam_is_a_config_error():
    with pytest.raises(ConfigError, match="compile works with optimizer adam only"):
        TrainConfig(epochs=1, compile=True, optimizer="lazy_adam").for_model(
            create_model("cml", 2, 2)
        ).validate()


def test_membership_flags_answer_what_the_sorted_keys_answer(synthetic, monkeypatch):
    from hlrm.training import sampler as sampling

    with_flags = sampling.NegativeSampler(synthetic.train)
    monkeypatch.setattr(sampling, "DENSE_MEMBERSHIP_PAIRS", 0)
    with_keys = sampling.NegativeSampler(synthetic.train)
    assert with_flags.flags is not None and with_keys.flags is None
    users = torch.arange(synthetic.n_users).repeat_interleave(synthetic.n_items)
    items = torch.arange(synthetic.n_items).repeat(synthetic.n_users)
    assert torch.equal(with_flags.contains(users, items), with_keys.contains(users, items))
    assert int(with_flags.contains(users, items).sum()) == synthetic.train.nnz
    samples = [
        s.sample(users[:999], 4, torch.Generator().manual_seed(3)) for s in (with_flags, with_keys)
    ]
    assert torch.equal(*samples)
