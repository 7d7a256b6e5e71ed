"""Hyper-parameter search with Optuna on the validation split.

A comparison is only fair when every model got the same tuning effort, and tuning must never see
the test split. ``tune`` searches the grid of the official HLR experiments (models spec §6) over
the options the model actually has:

=====================  ==============================  ================================
option                 values                          applies to
=====================  ==============================  ================================
``lr``                 2e-4, 5e-4, 7.5e-4              every trained model
``margin``             0.2, 0.5, 0.75                  hinge-loss (metric-learning) models
``history_size`` (P)   5, 10, 20, 50                   AdaCML, HLR, HLR++
``history_sampling``   random, unpop                   AdaCML, HLR, HLR++
``n_slots`` (N)        10, 20, 50                      LRML, HLR, HLR++
=====================  ==============================  ================================

With the sampled-softmax loss (the library's default recipe) ``lr`` is searched over 3e-4, 1e-3,
3e-3 and the softmax ``temperature`` over 0.1, 0.25, 0.5 in place of the margin.

(N is not in the spec's grid, which fixes N = 20; 10 and 50 bracket it.) Each trial trains on the
train split, selects its epoch as ``[train] select_by`` says, and scores the validation split with
exact full ranking (train items masked); the test split is never read.

The study lives in ``<run-dir>/study.db`` (SQLite), so an interrupted search resumes: a trial
that was running when the process died is marked failed and queued again with the same values,
and ``trials`` counts the complete trials the study should hold, not the ones of this call. One
``tune`` process per directory at a time. The directory also gets ``base.toml`` (the
configuration searched around), ``trials.csv``, ``tune.json`` and ``best.toml``, the best
configuration as a file ``hlrm train --config`` accepts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hlrm.compare import config_differences
from hlrm.config import RunConfig
from hlrm.data.matrix import SplitData
from hlrm.data.pipeline import load_split
from hlrm.errors import ConfigError, TrainingError
from hlrm.evaluation.metrics import METRICS
from hlrm.evaluation.protocol import evaluate
from hlrm.fileio import atomic_path, write_json, write_text
from hlrm.models.base import MODELS, Recommender, canonical_name, create_model, model_parameters
from hlrm.runs import start_from
from hlrm.training.trainer import Trainer

if TYPE_CHECKING:
    import optuna

#: The search grid (models spec §6); options a model lacks are left out of its search.
GRID: dict[str, tuple[Any, ...]] = {
    "lr": (2e-4, 5e-4, 7.5e-4),
    "margin": (0.2, 0.5, 0.75),
    "history_size": (5, 10, 20, 50),
    "history_sampling": ("random", "unpop"),
    "n_slots": (10, 20, 50),
}
#: The baselines fitted in closed form or by counting have their own grids, so a comparison can
#: give them the same tuning budget as the metric models (MF-ALS's regularisation and confidence
#: scale, item-kNN's neighbourhood and shrinkage, EASE's L2).
FITTED_GRID: dict[str, dict[str, tuple[Any, ...]]] = {
    "als": {"regularization": (0.1, 1.0, 10.0, 30.0, 100.0), "alpha": (1.0, 5.0, 20.0, 40.0)},
    "itemknn": {"neighbors": (20, 50, 100, 200, 500), "shrink": (0.0, 10.0, 50.0, 100.0)},
    "ease": {"l2": (50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)},
}
#: The grid of the sampled-softmax recipe (the library default): its step sizes are larger than
#: the paper's hinge settings, and the temperature takes the margin's place.
SOFTMAX_GRID: dict[str, tuple[Any, ...]] = {
    "lr": (3e-4, 1e-3, 3e-3),
    "temperature": (0.1, 0.25, 0.5),
}
TRAIN_OPTIONS = ("lr", "margin", "temperature")
MODEL_OPTIONS = ("history_size", "history_sampling", "n_slots")
STUDY_FILE = "study.db"
STUDY_NAME = "hlrm-tune"
BASE_CONFIG = "base.toml"
BEST_CONFIG = "best.toml"


def search_space(model: str, loss: str = "hinge") -> dict[str, tuple[Any, ...]]:
    """The part of :data:`GRID` that applies to ``model`` trained with ``loss``, or its
    :data:`FITTED_GRID` (empty for popularity, which has nothing to tune). With the softmax loss
    the learning rate and the temperature are searched on :data:`SOFTMAX_GRID` instead of the
    paper's learning rates and margins."""
    name = canonical_name(model)
    cls = MODELS[name]
    if not cls.trainable:
        return dict(FITTED_GRID.get(name, {}))
    grid = {**GRID, **SOFTMAX_GRID} if loss == "softmax" else GRID
    space = {"lr": grid["lr"]}
    if cls.pair_distances is not Recommender.pair_distances:  # a distance-based objective
        if loss == "softmax":
            space["temperature"] = SOFTMAX_GRID["temperature"]
        else:
            space["margin"] = GRID["margin"]
    parameters = model_parameters(name)
    space.update({key: GRID[key] for key in MODEL_OPTIONS if key in parameters})
    return space


def with_params(config: RunConfig, params: dict[str, Any]) -> RunConfig:
    """A copy of ``config`` with the searched values: training options into [train], the rest
    into the model's options."""
    out = RunConfig.from_dict(config.to_dict())
    for key, value in params.items():
        if key in TRAIN_OPTIONS:
            setattr(out.train, key, value)
        else:
            out.model.params[key] = value
    return out.resolved()


@dataclass
class TuneResult:
    """Where the study and the best configuration are, and what won."""

    path: Path
    metric: str
    best_value: float
    best_params: dict[str, Any]
    complete_trials: int
    best_config: Path


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("hlrm tune needs Optuna: pip install 'hlrm[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def tune(
    config: RunConfig,
    run_dir: str | Path,
    *,
    trials: int,
    metric: str = "ndcg@10",
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> TuneResult:
    """Search :func:`search_space` of ``config.model`` until the study in ``run_dir`` holds
    ``trials`` complete trials; the objective is the validation ``metric`` (maximised)."""
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, not {trials}")
    name, _, k = metric.partition("@")
    if not k.isdigit() or int(k) < 1 or name not in METRICS:
        raise ConfigError(
            f"the tuning metric is a ranking metric at a cut-off such as 'ndcg@10' "
            f"({', '.join(METRICS)}), not {metric!r}"
        )
    config = config.resolved()
    space = search_space(config.model.name, config.train.loss)
    if not space:
        raise ConfigError(f"model {config.model.name!r} has no options to tune")
    optuna = _optuna()
    path = Path(run_dir)
    _check_base(config, metric, path)
    split = load_split(config.data)
    if split.valid.nnz == 0:
        raise ConfigError(
            "tuning needs a validation split; this data has none (use a split with a "
            "validation share)"
        )
    path.mkdir(parents=True, exist_ok=True)
    _record_base(config, metric, path)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=f"sqlite:///{(path / STUDY_FILE).resolve()}",
        direction="maximize",
        load_if_exists=True,
    )
    _requeue_interrupted(study, optuna, log)
    # A grid that the trials can cover is searched exhaustively (TPE re-proposes points of small
    # grids); otherwise TPE, with a fresh seed per call so a resumed study does not replay the
    # first call's proposals.
    grid_size = math.prod(len(values) for values in space.values())
    if grid_size <= trials:
        if grid_size < trials:
            log(f"the grid of {config.model.name} has {grid_size} points: every one is tried")
            trials = grid_size
        study.sampler = optuna.samplers.GridSampler(
            {key: list(values) for key, values in space.items()}, seed=config.seed
        )
    else:
        study.sampler = optuna.samplers.TPESampler(seed=config.seed + len(study.trials))
    complete = _complete(study, optuna)
    if complete < trials:
        log(f"study {path / STUDY_FILE}: {complete} complete trial(s), running {trials - complete}")
        objective = _objective(config, split, space, metric, progress, optuna, path, log)
        study.optimize(
            objective,
            n_trials=trials - complete,
            catch=(TrainingError,),
            callbacks=[_reporter(metric, log, optuna)],
        )
    return _write_results(study, config, metric, path, optuna)


def _check_base(config: RunConfig, metric: str, path: Path) -> None:
    """A study resumes only around the same base configuration and metric it was started with."""
    if not (path / BASE_CONFIG).is_file():
        return
    differences = config_differences(RunConfig.from_toml(path / BASE_CONFIG), config)
    meta = path / "tune.json"
    if meta.is_file():
        stored = json.loads(meta.read_text(encoding="utf-8")).get("metric")
        if stored != metric:
            differences.append(f"metric: {stored!r} there, {metric!r} here")
    if differences:
        raise ConfigError(
            f"{path} holds a study of another configuration ({'; '.join(differences[:3])}); "
            f"choose another --run-dir"
        )


def _record_base(config: RunConfig, metric: str, path: Path) -> None:
    """Write what the study searches around, once, before its first trial."""
    if not (path / BASE_CONFIG).is_file():
        write_text(path / BASE_CONFIG, config.to_toml())
    if not (path / "tune.json").is_file():
        write_json(path / "tune.json", {"metric": metric, "model": config.model.name})


def _requeue_interrupted(study: optuna.Study, optuna: Any, log: Callable[[str], None]) -> None:
    """Trials still marked running belong to a process that died: fail them, queue their values."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params)
        log(f"trial {trial.number} was interrupted: queued again")


def _complete(study: optuna.Study, optuna: Any) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _objective(
    config: RunConfig,
    split: SplitData,
    space: dict[str, tuple[Any, ...]],
    metric: str,
    progress: bool,
    optuna: Any,
    path: Path,
    log: Callable[[str], None],
) -> Callable[[optuna.Trial], float]:
    k = int(metric.split("@")[1])

    def objective(trial: optuna.Trial) -> float:
        params = {
            key: trial.suggest_categorical(key, list(values)) for key, values in space.items()
        }
        # The grid is finite: a repeated proposal gets the earlier result instead of a retrain.
        for done in trial.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
        ):
            if done.params == params:
                trial.set_user_attr("repeat_of", done.number)
                return float(done.value)
        run = with_params(config, params)
        torch.manual_seed(run.seed)
        model = create_model(run.model.name, split.n_users, split.n_items, **run.model.params)
        # The trial starts where a run of this configuration would: a two-stage model from its
        # first stage, trained once in <study>/pretrain and shared by every trial (the stage
        # has its own recipe, so no searched option changes it), or from init_from.
        start_from(model, run, path, split, progress=progress, log=log)
        trainer = Trainer(model, split, run.train, seed=run.seed, progress=progress)
        trainer.fit()
        trainer.load_best()
        result = evaluate(model, split, ks=(k,), target="valid", device=trainer.device)
        trial.set_user_attr("best_epoch", trainer.best_epoch)
        value = result.metrics[metric]
        if math.isnan(value):
            raise TrainingError(f"validation {metric} is undefined for {params}")
        return value

    return objective


def _reporter(
    metric: str, log: Callable[[str], None], optuna: Any
) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            log(f"trial {trial.number} {trial.params}: {trial.state.name.lower()}")
            return
        log(
            f"trial {trial.number} {trial.params}: valid {metric} {trial.value:.4f} "
            f"(best {study.best_value:.4f}, trial {study.best_trial.number})"
        )

    return report


def _write_results(
    study: optuna.Study, config: RunConfig, metric: str, path: Path, optuna: Any
) -> TuneResult:
    complete = _complete(study, optuna)
    if complete == 0:
        raise TrainingError("no tuning trial finished (every one diverged or failed)")
    best = study.best_trial
    best_config = with_params(config, best.params)
    write_text(path / BEST_CONFIG, best_config.to_toml())
    with atomic_path(path / "trials.csv") as tmp:
        study.trials_dataframe().to_csv(tmp, index=False)
    write_json(
        path / "tune.json",
        {
            "metric": metric,
            "split": "valid",
            "model": config.model.name,
            "space": {
                key: list(values)
                for key, values in search_space(config.model.name, config.train.loss).items()
            },
            "complete_trials": complete,
            "best_trial": best.number,
            "best_value": best.value,
            "best_params": best.params,
            "best_config": BEST_CONFIG,
        },
    )
    return TuneResult(
        path, metric, float(best.value), dict(best.params), complete, path / BEST_CONFIG
    )
