"""CML-EASE (hlrm.models.hybrid): a CML trained as usual, plus β times EASE's item-item scores
with β chosen on validation after training."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from hlrm.config import ModelConfig, RunConfig
from hlrm.data.pipeline import DataConfig
from hlrm.errors import ConfigError
from hlrm.evaluation.protocol import evaluate
from hlrm.models import create_model, model_parameters
from hlrm.models.base import History
from hlrm.models.hybrid import BLEND_GRID, BLEND_LIMIT, choose_blend
from hlrm.runs import Run, recommend, train
from hlrm.training.trainer import TrainConfig, Trainer
from test_training import random_split

TRAIN = {"epochs": 3, "batch_size": 64, "device": "cpu", "negatives": 8}


def trained(name, split, train=TRAIN, **params):
    torch.manual_seed(3)
    model = create_model(name, split.n_users, split.n_items, dim=8, **params)
    trainer = Trainer(model, split, TrainConfig(**train), seed=3, progress=False)
    trainer.fit()
    trainer.load_best()
    return model, trainer


def test_the_cml_part_trains_exactly_like_a_cml_and_beta_is_the_validation_best():
    split = random_split()
    cml, cml_trainer = trained("cml", split)
    hybrid, trainer = trained("cml-ease", split)
    assert trainer.best_epoch == cml_trainer.best_epoch
    for name in ("user_embeddings", "item_embeddings"):
        assert torch.equal(getattr(hybrid, name), getattr(cml, name))
    values = trainer.blend_values["validation"]
    assert list(values)[: len(BLEND_GRID)] == list(BLEND_GRID)
    assert trainer.blend_values["chosen"] == hybrid.blend == max(values, key=values.get)
    users = torch.arange(split.n_users)
    expected = cml.score(users) + hybrid.blend * hybrid.item_item.score(users)
    assert torch.equal(hybrid.score(users), expected)
    hybrid.set_blend(0.0)
    assert torch.equal(hybrid.score(users), cml.score(users))
    assert evaluate(hybrid, split, ks=(10,), target="valid").metrics["ndcg@10"] == pytest.approx(
        values[0.0]
    )


def test_candidates_items_and_explanations_agree_with_the_full_score():
    split = random_split()
    model = create_model("cml-ease", split.n_users, split.n_items, dim=8, blend=0.7)
    model.prepare(split.train)
    assert model.blend_grid == ()  # a fixed weight is not searched
    users = torch.tensor([0, 5, 9])
    full = model.score(users)
    candidates = torch.tensor([[1, 2, 3], [4, 0, 7], [9, 8, 39]])
    assert torch.allclose(
        model.score_candidates(users, None, candidates), full.gather(1, candidates)
    )
    items = torch.tensor([3, 11, 20])
    assert torch.allclose(model.score(users, items=items), full[:, items])
    cml_part = model.score(users) - 0.7 * model.item_item.score(users)
    for explanation in model.explain(5, items):
        total = sum(explanation.effects.values())
        owned = set(split.train[5].indices.tolist())
        assert set(explanation.effects) == owned
        assert total == pytest.approx(
            float(full[1, explanation.item] - cml_part[1, explanation.item]), abs=1e-5
        )


def test_the_weight_is_checked():
    for wrong in (-1.0, "x", True, float("nan")):
        with pytest.raises(ConfigError, match="blend"):
            create_model("cml-ease", 4, 4, blend=wrong)
    assert create_model("cml-ease", 4, 4, blend="none").blend_grid == BLEND_GRID


def small_log(path):
    rng = np.random.default_rng(0)
    users, items = np.nonzero(rng.random((60, 40)) < 0.25)
    pd.DataFrame({"user": users, "item": items}).to_csv(path, index=False)
    return path


def run_config(path, **params):
    return RunConfig(
        seed=7,
        data=DataConfig(path=str(path), user_core=1, item_core=1),
        model=ModelConfig("cml-ease", {"dim": 8, **params}),
        train=TrainConfig(device="cpu", batch_size=256, epochs=3),
    )


def test_a_run_keeps_the_chosen_weight_and_a_final_fit_reuses_it(tmp_path):
    data = small_log(tmp_path / "log.csv")
    notes = []
    run = train(run_config(data), tmp_path / "run", progress=False, log=notes.append)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["blend"]["chosen"] == run.model.blend
    assert any(note.startswith("blend weight") for note in notes)
    opened = Run.open(tmp_path / "run")
    assert opened.model.blend == run.model.blend
    assert opened.metrics["ndcg@10"] == run.metrics["ndcg@10"]
    listed = recommend(opened, user=opened.split.user_ids[0], k=3, explain=True)
    assert listed[0].explanation["history_effect"]
    new_user = recommend(opened, items=list(opened.split.item_ids[:4]), k=3, explain=True)
    assert len(new_user) == 3 and new_user[0].explanation["history_effect"]
    config = run_config(data)
    config.final = True
    final = train(config, tmp_path / "final", progress=False)
    assert final.model.blend == final.validation.model.blend
    assert final.config.model.params["blend"] == final.model.blend


def test_a_catalogue_above_max_items_is_refused_before_training_in_one_line():
    with pytest.raises(ConfigError, match=r"cml-ease: its EASE term stores .* or use cml$"):
        create_model("cml-ease", 10, 30, max_items=20)


HLR_OPTIONS = {"history_size": 6, "n_slots": 4}
HLR_TRAIN = {**TRAIN, "pretrain": "none", "epochs": 2}


RELATION_VARIANTS = [("hlr", "hlr-ease"), ("hlr++", "hlr++-ease")]


@pytest.mark.parametrize(("base", "variant"), RELATION_VARIANTS)
def test_the_relation_part_trains_exactly_like_its_model_and_beta_is_the_validation_best(
    base, variant
):
    split = random_split()
    hlr, hlr_trainer = trained(base, split, HLR_TRAIN, **HLR_OPTIONS)
    hybrid, trainer = trained(variant, split, HLR_TRAIN, **HLR_OPTIONS)
    assert trainer.best_epoch == hlr_trainer.best_epoch
    for name, value in hlr.state_dict().items():
        assert torch.equal(hybrid.state_dict()[name], value), name
    values = trainer.blend_values["validation"]
    assert list(values)[: len(BLEND_GRID)] == list(BLEND_GRID)
    assert trainer.blend_values["chosen"] == hybrid.blend == max(values, key=values.get)
    assert evaluate(hybrid, split, ks=(10,), target="valid").metrics["ndcg@10"] == pytest.approx(
        values[hybrid.blend]
    )
    hybrid.set_blend(0.0)
    assert evaluate(hybrid, split, ks=(10,), target="valid").metrics["ndcg@10"] == pytest.approx(
        values[0.0]
    )


@pytest.mark.parametrize("variant", ["hlr-ease", "hlr++-ease"])
def test_relation_variants_score_candidates_and_explain_both_terms(variant):
    split = random_split()
    model = create_model(
        variant, split.n_users, split.n_items, dim=8, blend=0.7, **HLR_OPTIONS
    ).double()
    model.prepare(split.train)
    users = torch.tensor([0, 5, 9])
    pools = torch.tensor([[1, 2, 3, 40, 40, 40], [4, 0, 7, 8, 40, 40], [9, 8, 39, 1, 2, 3]])
    history = History(pools, pools != split.n_items)
    full = model.score(users, history)
    hlr_part = full - 0.7 * model.item_item.score(users).double()
    model.set_blend(0.0)
    torch.testing.assert_close(model.score(users, history), hlr_part)
    assert model.score_offsets(users) is None  # β = 0: HLR's own pruned path
    model.set_blend(0.7)
    offsets = model.score_offsets(users).double()  # the shift of the pruning bounds
    torch.testing.assert_close(offsets, full - hlr_part, rtol=1e-5, atol=1e-6)
    candidates = torch.tensor([[10, 11, 12], [13, 1, 17], [19, 18, 30]])
    torch.testing.assert_close(
        model.score_candidates(users, history, candidates), full.gather(1, candidates)
    )
    items = torch.tensor([10, 11, 20])
    one = History(pools[1:2], history.mask[1:2])
    explained = model.explain(5, items, one)
    model.set_blend(0.0)
    hlr_only = model.explain(5, items, one)
    owned = set(split.train[5].indices.tolist())
    for with_term, alone in zip(explained, hlr_only, strict=True):
        assert with_term.attention == alone.attention
        term = {j: with_term.effects.get(j, 0.0) - alone.effects.get(j, 0.0) for j in owned}
        total = sum(term.values())
        assert total == pytest.approx(
            float(full[1, with_term.item] - hlr_part[1, with_term.item]), abs=1e-6
        )


@pytest.mark.parametrize(
    ("estimator", "base", "variant"),
    [("HLREASE", "hlr", "hlr-ease"), ("HLRPlusPlusEASE", "hlr++", "hlr++-ease")],
)
def test_relation_variants_are_registered_everywhere_and_check_their_options(
    estimator, base, variant
):
    import hlrm

    assert getattr(hlrm, estimator).model_name == variant
    stores = rf"{re.escape(variant)}: its EASE term stores .* or use {re.escape(base)}$"
    with pytest.raises(ConfigError, match=stores):
        create_model(variant, 10, 30, max_items=20)
    with pytest.raises(ConfigError, match=f"{re.escape(variant)}: blend"):
        create_model(variant, 4, 4, blend=-1.0)
    assert create_model(variant, 4, 4).train_recipe["pretrain"] == "cml"


@pytest.mark.parametrize(
    ("base", "variant"), [("cml", "cml-ease"), ("hlr", "hlr-ease"), ("hlr++", "hlr++-ease")]
)
def test_a_variant_takes_its_base_models_options_and_its_own_without_repeating_them(base, variant):
    own = {"l2": 250.0, "blend": None, "max_items": 20_000}
    assert model_parameters(variant) == {**model_parameters(base), **own}
    with pytest.raises(ConfigError, match=f"model {re.escape(repr(variant))}: dim = 'x'"):
        create_model(variant, 4, 4, dim="x")  # the base's hints check the base's options
    with pytest.raises(ConfigError, match="has no option"):
        create_model(variant, 4, 4, no_such_option=1)
    model = create_model(variant, 4, 4, dim=6, blend=0.5)
    assert model.dim == 6 and model.blend == 0.5
    assert model.hparams == {**model_parameters(variant), "dim": 6, "blend": 0.5}


@pytest.mark.parametrize("variant", ["hlr-ease", "hlr++-ease"])
def test_a_relation_variant_run_recommends_with_explanations(tmp_path, variant):
    data = small_log(tmp_path / "log.csv")
    config = RunConfig(
        seed=7,
        data=DataConfig(path=str(data), user_core=1, item_core=1),
        model=ModelConfig(variant, {"dim": 8, "history_size": 5, "n_slots": 4}),
        train=TrainConfig(device="cpu", batch_size=256, epochs=2, pretrain="none"),
    )
    run = train(config, tmp_path / "run", progress=False)
    opened = Run.open(tmp_path / "run")
    assert opened.model.name == variant and opened.model.blend == run.model.blend
    assert opened.metrics["ndcg@10"] == run.metrics["ndcg@10"]
    listed = recommend(opened, user=opened.split.user_ids[0], k=3, explain=True)
    assert len(listed) == 3
    assert listed[0].explanation["user_attention"] and listed[0].explanation["history_effect"]


def test_the_blend_search_extends_the_grid_while_its_edge_wins():
    def peaked_at(top):
        return lambda beta: -abs(beta - top)

    chosen, values = choose_blend(BLEND_GRID, peaked_at(2.0))  # an inner optimum: the grid alone
    assert chosen == 2.0 and list(values) == list(BLEND_GRID)
    chosen, values = choose_blend(BLEND_GRID, peaked_at(40.0))  # past the edge: 16, 32, 64
    assert chosen == 32.0 and list(values) == [*BLEND_GRID, 16.0, 32.0, 64.0]
    chosen, values = choose_blend(BLEND_GRID, lambda beta: beta)  # rising: up to the limit
    assert chosen == BLEND_LIMIT == max(values)
    assert choose_blend(BLEND_GRID, lambda beta: 0.0) == (0.0, dict.fromkeys(BLEND_GRID, 0.0))


@pytest.mark.parametrize(("base", "variant"), [("cml", "cml-ease"), *RELATION_VARIANTS])
def test_a_trained_model_becomes_its_item_item_variant_without_training(base, variant):
    from hlrm.models.hybrid import item_item_variant

    split = random_split()
    params = {} if base == "cml" else HLR_OPTIONS
    model, _ = trained(base, split, HLR_TRAIN, **params)
    hybrid = item_item_variant(model, split.train, blend=0.5)
    assert hybrid.name == variant and hybrid.blend == 0.5
    for name, value in model.state_dict().items():
        assert torch.equal(hybrid.state_dict()[name], value), name
    hybrid.set_blend(0.0)
    assert evaluate(hybrid, split, ks=(10,), target="valid").metrics["ndcg@10"] == pytest.approx(
        evaluate(model, split, ks=(10,), target="valid").metrics["ndcg@10"]
    )
    with pytest.raises(ConfigError, match="ease has no item-item variant"):
        item_item_variant(create_model("ease", split.n_users, split.n_items), split.train)
