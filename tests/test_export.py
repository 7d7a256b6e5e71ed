"""hlrm export: npz and parquet files that numpy and pyarrow read without hlrm."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from hlrm.errors import ConfigError, HlrmError
from hlrm.export import export_run
from serve_helpers import random_run, trained_run_dir
from test_console_script import run_script


@pytest.fixture(scope="module")
def hlr_run():
    return random_run("hlr", dim=8, n_slots=4, history_size=6, address_scale=2.0)


def test_npz_holds_weights_ids_titles_and_interactions(hlr_run, tmp_path):
    path = export_run(hlr_run, "npz", tmp_path / "hlr.npz")
    model, split = hlr_run.model, hlr_run.split
    with np.load(path) as archive:  # allow_pickle=False, numpy's default
        meta = json.loads(str(archive["metadata_json"]))
        assert meta["model"] == "hlr" and meta["schema_version"] == 1
        assert meta["hparams"]["history_size"] == 6
        assert archive["user_ids"].tolist() == split.user_ids.astype(str).tolist()
        assert archive["item_ids"].tolist() == split.item_ids.astype(str).tolist()
        assert archive["item_titles"][3] == split.item_titles[3]
        np.testing.assert_array_equal(
            archive["user_embeddings"], model.user_embeddings.detach().numpy()
        )
        np.testing.assert_array_equal(
            archive["item_embeddings"], model.item_embeddings.detach().numpy()
        )
        np.testing.assert_array_equal(archive["memory_keys"], model.lram.keys.detach().numpy())
        np.testing.assert_array_equal(archive["memory_values"], model.lram.memory.detach().numpy())
        assert math.isclose(float(archive["address_scale"]), 2.0, rel_tol=1e-6)
        assert math.isclose(float(archive["attention_scale"]), 1.0, rel_tol=1e-6)
        rows, cols = archive["interactions_user"], archive["interactions_item"]
        pairs = set(zip(rows.tolist(), cols.tolist(), strict=True))
    everything = split.everything.tocoo()
    assert pairs == set(zip(everything.row.tolist(), everything.col.tolist(), strict=True))


def test_cml_scores_from_the_npz_alone(tmp_path):
    """The documented CML formula on the exported arrays gives the model's scores."""
    run = random_run("cml", dim=8, item_bias=True)
    with torch.no_grad():
        run.model.item_biases.normal_()
    path = export_run(run, "npz", tmp_path / "cml.npz")
    with np.load(path) as archive:
        users, items = archive["user_embeddings"], archive["item_embeddings"]
        scores = -(((users[:5, None, :] - items[None]) ** 2).sum(-1) - archive["item_biases"])
    expected = run.model.score(torch.arange(5)).detach().numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


def test_parquet_tables(hlr_run, tmp_path):
    out = export_run(hlr_run, "parquet", tmp_path / "hlr")
    model, split = hlr_run.model, hlr_run.split
    users = pq.read_table(out / "users.parquet")
    items = pq.read_table(out / "items.parquet")
    memory = pq.read_table(out / "memory.parquet")
    assert users.column("user_id").to_pylist() == split.user_ids.astype(str).tolist()
    np.testing.assert_array_equal(
        np.stack(users.column("user_embeddings").to_numpy(zero_copy_only=False)),
        model.user_embeddings.detach().numpy(),
    )
    assert items.column("title").to_pylist()[:2] == split.item_titles[:2].tolist()
    np.testing.assert_array_equal(
        np.stack(items.column("item_embeddings").to_numpy(zero_copy_only=False)),
        model.item_embeddings.detach().numpy(),
    )
    keys = np.stack(memory.column("key").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(keys, model.lram.keys.detach().numpy().T)
    values = np.stack(memory.column("value").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(values, model.lram.memory.detach().numpy())
    interactions = pq.read_table(out / "interactions.parquet")
    assert interactions.num_rows == split.everything.nnz
    info = json.loads((out / "model.json").read_text())
    assert info["model"] == "hlr" and info["n_items"] == split.n_items
    assert info["other_tensors"]["address_scale"] == pytest.approx(2.0)


def test_rewrites_replace_whole_exports_and_failures_leave_the_old_one(hlr_run, tmp_path):
    out = export_run(hlr_run, "parquet", tmp_path / "export")
    before = (out / "users.parquet").read_bytes()
    export_run(random_run("cml", seed=1, dim=8), "parquet", out)  # a CML export has no memory table
    assert sorted(p.name for p in out.iterdir()) == [
        "interactions.parquet", "items.parquet", "model.json", "users.parquet",
    ]  # fmt: skip
    assert (out / "users.parquet").read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging left behind

    npz = export_run(hlr_run, "npz", tmp_path / "model.npz")
    good = npz.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    original = np.savez_compressed
    np.savez_compressed = fail
    try:
        with pytest.raises(OSError):
            export_run(hlr_run, "npz", npz)
    finally:
        np.savez_compressed = original
    assert npz.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "model.npz"]


def test_refusals(hlr_run, tmp_path):
    with pytest.raises(ConfigError, match="--format"):
        export_run(hlr_run, "csv", tmp_path / "x")
    with pytest.raises(ConfigError, match="no user or item vectors"):
        export_run(random_run("popularity"), "npz", tmp_path / "pop.npz")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(HlrmError, match="not an hlrm export"):
        export_run(hlr_run, "parquet", mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(HlrmError, match="is a directory"):
        export_run(hlr_run, "npz", mine)


def test_console_script(tmp_path):
    run_dir = trained_run_dir(tmp_path / "run", "lrml", dim=8, n_slots=4)
    result = run_script("export", str(run_dir), "--format", "parquet", "--out", str(tmp_path / "x"))
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "x" / "memory.parquet").num_rows == 4
    result = run_script("export", str(run_dir), "--format", "xml", "--out", str(tmp_path / "y"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --format must be one of npz, parquet, not 'xml'"
    ]
    assert not (tmp_path / "y").exists()


def test_the_item_item_term_is_exported_and_scores_from_the_arrays(tmp_path):
    """CML-EASE (and HLR-EASE, the same term): EASE's weights per item, the training rows the
    term reads and the blend weight; the documented formula reproduces the model's scores."""
    run = random_run("cml-ease", dim=8, blend=0.5)
    path = export_run(run, "npz", tmp_path / "cml-ease.npz")
    with np.load(path) as archive:
        users, items = archive["user_embeddings"], archive["item_embeddings"]
        weights, beta = archive["item_item_weights"], float(archive["blend_weight"])
        indptr, indices = archive["item_item_train_indptr"], archive["item_item_train_indices"]
    n_items = run.split.n_items
    assert weights.shape == (n_items, n_items) and beta == 0.5
    rows = np.zeros((5, n_items), dtype=np.float32)
    for user in range(5):
        rows[user, indices[indptr[user] : indptr[user + 1]]] = 1.0
    scores = -((users[:5, None, :] - items[None]) ** 2).sum(-1) + beta * rows @ weights
    expected = run.model.score(torch.arange(5)).detach().numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)

    directory = export_run(run, "parquet", tmp_path / "cml-ease")
    table = pq.read_table(directory / "items.parquet")
    assert table.num_rows == n_items
    stored = np.stack(table.column("item_item_weights").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(stored, weights)
    train = pq.read_table(directory / "item_item_train.parquet")
    assert train.num_rows == len(indices)
    assert (
        json.loads((directory / "model.json").read_text())["other_tensors"]["blend_weight"] == 0.5
    )
