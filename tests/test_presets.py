"""Every shipped configuration loads, resolves and builds its model."""

from pathlib import Path

import pytest

from hlrm.config import RunConfig
from hlrm.models import create_model

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "hlr-paper").rglob("*.toml"))


def test_presets_exist_for_every_model():
    names = {p.stem for p in CONFIGS}
    assert {"cml", "lrml", "transcf", "adacml", "hlr", "hlr++", "als"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_preset_resolves_and_builds(path):
    config = RunConfig.from_toml(path).resolved()
    assert config.data.dataset == path.parent.name
    assert config.model.name == path.stem
    create_model(config.model.name, 4, 5, **config.model.params)
    assert RunConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_presets_pin_dense_adam(path):
    """The published models were trained with dense Adam; the presets say so explicitly, so a
    change of the library's default optimiser cannot change them."""
    config = RunConfig.from_toml(path).resolved()
    if path.stem != "als":
        assert config.train.optimizer == "adam"
