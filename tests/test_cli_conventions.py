"""Command-line conventions: every option's help states its default, the defaults written in
``hlrm.cli`` (kept there so that ``--help`` does not import torch) are the library's real ones,
options with a fixed set of values list and check them, and one option has one name in every
command."""

import dataclasses
import os
import subprocess
import sys

import pytest
import typer

from cli_helpers import run_cli
from hlrm import cli
from hlrm.config import EvalConfig, RunConfig
from hlrm.data.pipeline import DataConfig
from hlrm.data.readers import FORMATS
from hlrm.data.splits import SPLITS
from hlrm.models.base import MODELS, model_parameters
from hlrm.training.history import SAMPLING_MODES
from hlrm.training.losses import LOSSES, NEGATIVE_SELECTIONS, REDUCTIONS
from hlrm.training.optim import OPTIMIZERS
from hlrm.training.sampler import DISTRIBUTIONS
from hlrm.training.trainer import DEFAULT_RECIPE, PRETRAIN_MODELS, TrainConfig
from test_console_script import SCRIPT, run_script

#: Options that have no default to show: what to work on, switches, and free text.
WITHOUT_DEFAULT = {"dataset", "data", "config", "user", "items", "init_from", "param", "hlrm_type"}
WITHOUT_DEFAULT |= {"as_json", "help", "version", "out", "run_dir", "users"}


def click_commands() -> dict[str, object]:
    group = typer.main.get_command(cli.app)
    commands = dict(group.commands)
    datasets = commands.pop("datasets")
    commands.update({f"datasets {name}": command for name, command in datasets.commands.items()})
    return commands


def shows_a_default(param) -> bool:
    if "[default:" in (param.help or ""):
        return True
    if param.is_flag and not param.secondary_opts:
        return True  # a lone switch (--json, --quiet): off unless given
    return bool(param.show_default) and param.default is not None


def test_every_option_shows_its_default():
    missing = []
    for name, command in click_commands().items():
        for param in command.params:
            if getattr(param, "param_type_name", "") != "option" or param.hidden:
                continue
            if param.name in WITHOUT_DEFAULT or shows_a_default(param):
                continue
            missing.append(f"hlrm {name} {param.opts[0]}")
    assert not missing, f"options whose help shows no default: {missing}"


def first_value(text: str) -> str:
    return text.split(";")[0].split(" (")[0].strip()


def test_the_defaults_shown_are_the_librarys():
    defaults = cli.DEFAULTS
    train = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        value = getattr(train, field.name)
        if value is None:
            value = DEFAULT_RECIPE[field.name]
        shown = first_value(defaults[field.name])
        if isinstance(value, bool):
            assert shown == ("on" if value else "off") or shown == "shared" and value, field.name
        elif isinstance(value, float):
            assert float(shown) == value, field.name
        else:
            assert shown == str(value), field.name
    # Recipes that differ from the default name their models.
    for key in DEFAULT_RECIPE:
        differ = sorted(m for m, cls in MODELS.items() if key in cls.train_recipe)
        for model in differ:
            assert model in defaults[key], (key, model)
    evaluation = EvalConfig()
    assert first_value(defaults["ks"]) == ",".join(map(str, evaluation.ks))
    assert int(first_value(defaults["cohorts"])) == evaluation.cohorts
    assert int(first_value(defaults["cohort_size"])) == evaluation.cohort_size
    assert int(first_value(defaults["max_users"])) == evaluation.max_users
    assert float(first_value(defaults["memory_mib"])) == evaluation.memory_mib
    assert first_value(defaults["fractions"]) == ",".join(f"{f:g}" for f in DataConfig().fractions)
    assert int(defaults["seed"]) == RunConfig().seed
    assert defaults["model"] == RunConfig().model.name
    for key in ("dim", "n_slots", "history_size", "history_sampling"):
        values = {str(model_parameters(m)[key]) for m in MODELS if key in model_parameters(m)}
        assert values == {defaults[key]}, key


def test_choices_are_the_librarys():
    assert set(cli.MODEL_NAMES) == set(MODELS)
    assert cli.DATA_FORMATS == FORMATS
    assert cli.SPLITS == SPLITS
    assert cli.REDUCTIONS == REDUCTIONS
    assert cli.LOSSES == LOSSES
    assert cli.NEGATIVE_SAMPLINGS == DISTRIBUTIONS
    assert cli.NEGATIVE_SELECTIONS == NEGATIVE_SELECTIONS
    assert cli.HISTORY_SAMPLINGS == SAMPLING_MODES
    assert cli.PRETRAINS == PRETRAIN_MODELS
    assert cli.OPTIMIZERS == OPTIMIZERS


def test_one_option_has_one_name_in_every_command():
    names: dict[str, dict[tuple[str, ...], list[str]]] = {}
    for command_name, command in click_commands().items():
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option":
                flags = tuple(sorted(param.opts))
                names.setdefault(param.name, {}).setdefault(flags, []).append(command_name)
    clashes = {name: spellings for name, spellings in names.items() if len(spellings) > 1}
    assert not clashes, clashes


@pytest.mark.skipif(SCRIPT is None, reason="the hlrm console script is not installed")
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--model", "bogus", "--dataset", "synthetic"], "'bogus' is not one of cml"),
        (["train", "--loss", "squared", "--dataset", "synthetic"], "is not one of hinge, softmax"),
        (["train", "--split", "sideways", "--dataset", "synthetic"], "is not one of random"),
        (["evaluate", "x", "--device", "tpu"], "is not one of auto, cpu, cuda"),
    ],
)
def test_a_value_outside_the_choices_is_a_one_line_usage_error(args, fragment, tmp_path):
    result = run_script(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]
    assert "--help" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_model_aliases_are_still_accepted(monkeypatch, capsys):
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--model", "pop", "--dataset", "synthetic", "--quiet"
    )
    assert code == 0, err


def test_help_lists_choices_and_defaults():
    result = subprocess.run(
        [sys.executable, "-m", "hlrm", "train", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    )
    assert "One of: hinge, softmax." in result.stdout
    shown = "[default: 0.001; 0.0002 for hlr, hlr++, hlr-ease, hlr++-ease after their cml stage]"
    assert shown in result.stdout


def test_tables_are_not_cut_when_the_output_is_not_a_terminal(capsys, monkeypatch):
    """rich wraps at 80 columns without a terminal, which cut the compare table."""
    from rich.table import Table

    monkeypatch.delenv("COLUMNS", raising=False)
    console = cli.stdout_console()
    table = Table(title="test metrics @10 (baseline cml)")
    for name in ("model", "ndcg@10", "recall@10", "precision@10", "hit@10", "map@10", "mrr@10"):
        table.add_column(name, no_wrap=True)
    table.add_row("hlr++ (warm-started)", *["0.3079 ± 0.0123*†↑"] * 6)
    console.print(table)
    out = capsys.readouterr().out
    assert "…" not in out and out.count("0.3079 ± 0.0123*†↑") == 6
    assert max(len(line) for line in out.splitlines()) > 80
