"""hlrm tune: the search space per model, a resumable SQLite study, a best config that trains."""

import json
import sys

import pytest

from hlrm.cli import main
from hlrm.config import RunConfig
from hlrm.data.pipeline import DataConfig
from hlrm.errors import ConfigError
from hlrm.tuning import BEST_CONFIG, STUDY_FILE, STUDY_NAME, search_space, tune

optuna = pytest.importorskip("optuna")


def base_config(model: str = "lrml") -> RunConfig:
    config = RunConfig(data=DataConfig(dataset="synthetic"))
    config.model.name = model
    config.model.params = {"dim": 16} if model not in ("popularity", "ease") else {}
    config.train.epochs = 1
    config.train.device = "cpu"
    config.train.loss = "hinge"  # the paper's grid (lr, margin)
    return config


def complete_trials(path) -> int:
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{path / STUDY_FILE}")
    return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


def test_search_space_holds_only_options_the_model_has():
    assert set(search_space("hlr")) == {
        "lr", "margin", "history_size", "history_sampling", "n_slots"
    }  # fmt: skip
    assert search_space("hlr")["history_size"] == (5, 10, 20, 50)
    assert set(search_space("lrml")) == {"lr", "margin", "n_slots"}
    assert set(search_space("adacml")) == {"lr", "margin", "history_size", "history_sampling"}
    assert set(search_space("cml")) == {"lr", "margin"}
    assert set(search_space("bpr")) == {"lr"}  # no hinge, no margin
    assert search_space("popularity") == {}
    assert set(search_space("als")) == {"regularization", "alpha"}
    assert set(search_space("itemknn")) == {"neighbors", "shrink"}
    assert search_space("ease") == {"l2": (50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)}


def test_the_softmax_recipe_searches_temperature_instead_of_margin():
    assert search_space("cml", "softmax") == {
        "lr": (3e-4, 1e-3, 3e-3),
        "temperature": (0.1, 0.25, 0.5),
    }
    assert set(search_space("hlr", "softmax")) == {
        "lr", "temperature", "history_size", "history_sampling", "n_slots"
    }  # fmt: skip
    assert search_space("bpr", "softmax") == {"lr": (3e-4, 1e-3, 3e-3)}


def test_fitted_baselines_are_tuned_on_validation(tmp_path):
    result = tune(base_config("ease"), tmp_path, trials=10, log=lambda _: None)
    tried = [t.params["l2"] for t in optuna.load_study(
        study_name=STUDY_NAME, storage=f"sqlite:///{tmp_path / STUDY_FILE}"
    ).trials]  # fmt: skip
    assert sorted(tried) == [50, 100, 250, 500, 1000, 2500]  # a small grid is searched whole
    assert result.complete_trials == 6
    best = RunConfig.from_toml(result.best_config)
    assert best.model.name == "ease" and best.model.params["l2"] in (50, 100, 250, 500, 1000, 2500)
    assert search_space("cml")["lr"] == (2e-4, 5e-4, 7.5e-4)


def test_study_resumes_and_best_config_trains(tmp_path, monkeypatch, capsys):
    lines: list[str] = []
    first = tune(base_config(), tmp_path, trials=2, log=lines.append)
    assert first.complete_trials == complete_trials(tmp_path) == 2

    # a second invocation, through the CLI, continues the same study up to three trials
    monkeypatch.setattr(
        sys,
        "argv",
        ["hlrm", "tune", "--config", str(tmp_path / "base.toml"), "--trials", "3",
         "--run-dir", str(tmp_path)],
    )  # fmt: skip
    main()
    out, err = capsys.readouterr()
    assert "2 complete trial(s), running 1" in err and "best configuration" in out
    assert complete_trials(tmp_path) == 3

    summary = json.loads((tmp_path / "tune.json").read_text())
    assert summary["complete_trials"] == 3 and summary["split"] == "valid"
    best = RunConfig.from_toml(tmp_path / BEST_CONFIG)
    assert best.model.name == "lrml" and best.data.dataset == "synthetic"
    params = summary["best_params"]
    assert best.train.lr == params["lr"] and best.train.margin == params["margin"]
    assert best.model.params["n_slots"] == params["n_slots"]
    assert best.model.params["dim"] == 16  # the base configuration is kept
    best.resolved()
    assert (tmp_path / "trials.csv").read_text().count("COMPLETE") == 3


def test_a_trial_interrupted_by_a_crash_is_run_again(tmp_path):
    tune(base_config(), tmp_path, trials=1, log=lambda _: None)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{tmp_path / STUDY_FILE}")
    values = {"lr": 7.5e-4, "margin": 0.75, "n_slots": 10}
    study.enqueue_trial(values)
    crashed = study.ask()  # what a killed process leaves behind: a trial still "running"
    for key, choices in search_space("lrml").items():
        crashed.suggest_categorical(key, list(choices))
    lines: list[str] = []
    tune(base_config(), tmp_path, trials=2, log=lines.append)
    trials = study.get_trials()
    assert trials[crashed.number].state == optuna.trial.TrialState.FAIL
    assert trials[-1].state == optuna.trial.TrialState.COMPLETE
    assert trials[-1].params == values
    assert f"trial {crashed.number} was interrupted: queued again" in lines


def test_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="no options to tune"):
        tune(base_config("popularity"), tmp_path / "a", trials=1)
    with pytest.raises(ConfigError, match="ndcg@10"):
        tune(base_config(), tmp_path / "b", trials=1, metric="ndcg")
    with pytest.raises(ConfigError, match="--trials"):
        tune(base_config(), tmp_path / "c", trials=0)
    no_valid = base_config()
    no_valid.data.fractions = (0.8, 0.0, 0.2)
    with pytest.raises(ConfigError, match="validation split"):
        tune(no_valid, tmp_path / "e", trials=1)
    assert not (tmp_path / "e").exists()
    tune(base_config(), tmp_path / "d", trials=1, log=lambda _: None)
    other = base_config()
    other.train.epochs = 2
    with pytest.raises(ConfigError, match="train.epochs"):
        tune(other, tmp_path / "d", trials=2)
    with pytest.raises(ConfigError, match="metric"):
        tune(base_config(), tmp_path / "d", trials=2, metric="recall@10")


def test_a_model_of_a_comparison_is_tuned_under_its_protocol(tmp_path, monkeypatch, capsys):
    (tmp_path / "compare.toml").write_text(
        '[data]\ndataset = "synthetic"\nuser_core = 3\n'
        "[eval]\ncohorts = 2\ncohort_size = 100\n"
        '[compare]\nmodels = ["knn"]\n'
        '[models.knn]\nmodel = "itemknn"\nshrink = 10.0\n'
    )
    args = ["hlrm", "tune", "--config", str(tmp_path / "compare.toml"), "--trials", "2",
            "--run-dir", str(tmp_path / "study"), "--quiet"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", [*args, "--model", "knn"])
    main()
    assert "best configuration" in capsys.readouterr().out
    best = RunConfig.from_toml(tmp_path / "study" / BEST_CONFIG)
    assert best.model.name == "itemknn" and best.data.user_core == 3 and best.eval.cohorts == 2
    monkeypatch.setattr(sys, "argv", args)  # which of its models?
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2 and "--model" in capsys.readouterr().err


def test_train_with_tune_searches_then_trains_the_best(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(
        sys,
        "argv",
        ["hlrm", "train", "--model", "cml", "--dataset", "synthetic", "--epochs", "1",
         "--tune", "2", "--run-dir", str(run_dir), "--device", "cpu"],
    )  # fmt: skip
    main()
    err = capsys.readouterr().err
    assert "tuning cml: 2 trials" in err and "best of 2 trials" in err
    assert complete_trials(run_dir / "tuning") == 2
    trained = RunConfig.from_toml(run_dir / "config.toml")
    best = json.loads((run_dir / "tuning" / "tune.json").read_text())["best_params"]
    assert trained.train.lr == best["lr"] and trained.train.temperature == best["temperature"]
    assert (run_dir / "metrics.json").is_file()


def test_two_stage_trials_start_from_one_shared_first_stage(tmp_path, monkeypatch):
    """An HLR trial starts where an HLR run would: from the CML stage, trained once in the
    study's pretrain/ and reused by every trial (the searched options do not change it)."""
    import hlrm.runs

    stages = []
    pretrained = hlrm.runs._pretrained
    monkeypatch.setattr(
        hlrm.runs, "_pretrained", lambda *a, **k: stages.append(1) or pretrained(*a, **k)
    )
    starts = []
    warm_start = hlrm.runs._warm_start
    monkeypatch.setattr(
        hlrm.runs, "_warm_start", lambda m, s, o: starts.append(o) or warm_start(m, s, o)
    )
    config = base_config("hlr")
    config.model.params = {"dim": 8, "history_size": 5}
    config.train.pretrain = "cml"
    tune(config, tmp_path, trials=2, log=lambda _: None)
    assert starts == ["pretraining", "pretraining"]
    assert (tmp_path / "pretrain" / "metrics.json").is_file()
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{tmp_path / STUDY_FILE}")
    assert len(stages) == 2 and complete_trials(tmp_path) == 2 and len(study.trials) == 2
