"""Run directories: everything needed to inspect, re-evaluate, resume or serve a trained model.

Layout::

    config.toml                 resolved configuration (repeat the run with --config)
    meta.json                   package and torch versions, device, start time, command line,
                                SHA-256 of your own data files (--resume refuses changed data)
    split.npz                   the exact train/valid/test split and original ids
    history.csv                 one row per epoch
    metrics.json                final test metrics (flat keys such as "ndcg@10") and the protocol
    per_user_metrics.parquet    the same metrics per test user
    checkpoints/best.pt         weights of the selected epoch
    checkpoints/last.pt         full training state of the latest epoch (for --resume)
    validation/                 a final fit's (train --final) run that chose its epoch count
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

import hlrm
from hlrm import distributed
from hlrm.config import ModelConfig, RunConfig
from hlrm.data.matrix import SplitData
from hlrm.data.pipeline import data_checksums, data_notes, load_split
from hlrm.errors import ConfigError, HlrmError
from hlrm.evaluation.protocol import EvaluationResult, evaluate
from hlrm.evaluation.ranking import PAD, top_k_scored
from hlrm.fileio import atomic_path, remove_stale_temporaries, write_json, write_text
from hlrm.models.base import MODELS, History, Recommender, create_model
from hlrm.models.memory import Explanation
from hlrm.resources import check_training
from hlrm.training.checkpoint import first_line, load_checkpoint, model_state, save_checkpoint
from hlrm.training.history import HistorySampler
from hlrm.training.trainer import (
    LOSS_SELECTION,
    EpochRecord,
    TrainConfig,
    Trainer,
    resolve_device,
)

if TYPE_CHECKING:
    from hlrm.retrieval import AnnIndex

CONFIG = "config.toml"
#: What a run directory may already hold when training starts afresh: ``hlrm train --tune``
#: keeps its study there, and a run stopped before its first checkpoint leaves these files,
#: which are simply written again (without ``checkpoints/last.pt`` there is nothing to resume).
LOCK = ".lock"
PRETRAIN = "pretrain"  # the first stage of a run with ``pretrain`` (a run directory itself)
#: A final fit (``train --final``) keeps the run that chose its epochs in ``validation/``.
VALIDATION = "validation"
OWN_ENTRIES = {
    "tuning", "checkpoints", PRETRAIN, VALIDATION, CONFIG, "split.npz", "meta.json",
    "history.csv", LOCK,
}  # fmt: skip
BEST = "checkpoints/best.pt"
#: ``metrics.json`` of a run without a test split (a final fit, or a zero test share).
NO_TEST = "no test split (a final fit on every interaction, or a zero test share): not evaluated"
#: The models with :meth:`explain` (what led to a recommendation).
EXPLAINED = ("HLR", "HLR++", "AdaCML", "LRML", "CML-EASE", "HLR-EASE", "HLR++-EASE")


def model_from_checkpoint(state: dict[str, Any], source: object = "the checkpoint") -> Recommender:
    """The model a checkpoint (:func:`load_checkpoint`) holds; weights that do not fit the
    model it names (a hand-edited or mixed-up file) are one :class:`HlrmError`."""
    try:
        model = create_model(state["model"], state["n_users"], state["n_items"], **state["hparams"])
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise HlrmError(
            f"{source} is damaged: its weights do not fit the {state['model']!r} model it names "
            f"({first_line(exc)})"
        ) from None
    return model


@dataclass
class Run:
    """A trained model with its split and configuration, in memory and (optionally) on disk."""

    config: RunConfig
    split: SplitData
    model: Recommender
    path: Path | None = None
    metrics: dict[str, Any] | None = None
    #: The epoch whose weights were kept (0 for models fitted without epochs, or when unknown:
    #: a run opened from disk).
    best_epoch: int = 0
    #: A final fit's run that chose its epochs (in memory; on disk ``validation/``).
    validation: Run | None = None
    #: The model a two-stage run (``pretrain``) started from, in memory after training.
    first_stage: Recommender | None = None
    #: Deployed history samplers of :attr:`model` over ``split.everything``, by seed: building
    #: one copies the whole interaction matrix, which a server would otherwise pay per request.
    _samplers: dict[int, HistorySampler | None] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def open(cls, path: str | Path, device: str = "cpu") -> Run:
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise HlrmError(f"{path} is not an hlrm run directory (it has no {CONFIG})")
        if not (path / BEST).is_file():
            raise HlrmError(
                f"{path} is incomplete: training stopped before its first checkpoint ({BEST}); "
                f"continue it with hlrm train --run-dir {path} --resume, or train it again"
            )
        config = RunConfig.from_toml(path / CONFIG)
        split = SplitData.load(str(path / "split.npz"))
        state = load_checkpoint(path / BEST, "cpu")
        if (state["n_users"], state["n_items"]) != (split.n_users, split.n_items):
            raise HlrmError(
                f"{path / BEST} belongs to another run: it was trained on {state['n_users']:,} "
                f"users and {state['n_items']:,} items, this run's split has "
                f"{split.n_users:,} and {split.n_items:,}"
            )
        model = model_from_checkpoint(state, path / BEST)
        model.to(resolve_device(device)).eval()
        model.prepare(split.train)
        return cls(config, split, model, path, read_metrics(path))

    def evaluate(
        self,
        ks: list[int] | None = None,
        cohorts: int | None = None,
        max_users: int | None = None,
        device: str = "cpu",
    ) -> EvaluationResult:
        if self.config.final and not self.split.test.nnz:
            validation = None if self.path is None else self.path / VALIDATION
            where = (
                f"; its validation run {validation} has the test metrics"
                if validation is not None and validation.is_dir()
                else ""
            )
            raise HlrmError(
                "a final fit was trained on every interaction, so it has no test split to "
                f"evaluate{where}"
            )
        cfg = self.config.eval
        cohorts = cfg.cohorts if cohorts is None else cohorts
        max_users = cfg.max_users if max_users is None else max_users
        return evaluate(
            self.model,
            self.split,
            ks=tuple(ks or cfg.ks),
            target="test",
            cohorts=cohorts or None,
            cohort_size=cfg.cohort_size,
            seed=self.config.seed,
            max_users=max_users or None,
            device=resolve_device(device),
            memory_mib=cfg.memory_mib,
        )


def read_metrics(path: Path) -> dict[str, Any] | None:
    """The run's final test metrics, or ``None`` while there are none: ``metrics.json`` is
    written last, so its absence means training has not finished (killed, or still running)."""
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        return None
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        metrics = exc
    if not isinstance(metrics, dict):
        raise HlrmError(
            f"{metrics_path} is damaged (not a JSON object of metrics); delete it, and "
            f"hlrm evaluate {path} --allow-incomplete evaluates the run again"
        )
    return metrics


def _warm_start(model: Recommender, source: Recommender, origin: str) -> None:
    """Copy the user and item embeddings of ``source`` (trained in ``origin``) into ``model``."""
    for name in ("user_embeddings", "item_embeddings"):
        target = getattr(model, name, None)
        weights = getattr(source, name, None)
        if target is None or weights is None:
            raise ConfigError(f"{origin}: {name} missing in {model.name!r} or {source.name!r}")
        if target.shape != weights.shape:
            raise ConfigError(
                f"--init-from {origin}: {name} has shape {tuple(weights.shape)}, "
                f"this model needs {tuple(target.shape)} (same dataset, split and dim required)"
            )
        with torch.no_grad():
            target.copy_(weights)


def lock_run_directory(path: Path) -> IO[str]:
    """Hold an exclusive lock on ``path/.lock`` while training writes into ``path``; a second
    process is refused with one line instead of interleaving its files with the first's. The
    operating system drops the lock when the holder exits, even on ``kill -9``, so a killed run
    never leaves a stale lock behind. Without ``fcntl`` (Windows) no lock is taken."""
    path.mkdir(parents=True, exist_ok=True)
    handle = (path / LOCK).open("a")
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise HlrmError(
            f"another hlrm process is training into {path}; wait for it or choose another --run-dir"
        ) from None
    return handle


#: What a resumed run may change: how long it trains and where.
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "patience"), ("train", "device")}


def _check_resumable(config: RunConfig, path: Path) -> None:
    """Refuse to resume ``path`` under options other than those it was trained with (beyond
    :data:`RESUMABLE_CHANGES`): the run would then claim options its weights never had."""
    stored = RunConfig.from_toml(path / CONFIG).to_dict()
    wanted = config.to_dict()
    changed = []
    for section in sorted(set(stored) | set(wanted)):
        left, right = stored.get(section), wanted.get(section)
        if isinstance(left, dict) and isinstance(right, dict):
            for key in sorted(set(left) | set(right)):
                if left.get(key) != right.get(key) and (section, key) not in RESUMABLE_CHANGES:
                    changed.append(f"{section}.{key}: {left.get(key)!r} -> {right.get(key)!r}")
        elif left != right:
            changed.append(f"{section}: {left!r} -> {right!r}")
    if changed:
        raise ConfigError(
            f"cannot resume {path} with other options ({'; '.join(changed[:3])}); only the "
            f"epochs, patience and device may change"
        )


def _check_same_data(path: Path, checksums: dict[str, str] | None) -> None:
    """Refuse to resume ``path`` on data other than it was trained on: its split and weights
    belong to the old data. Runs written before checksums were stored are not checked."""
    try:
        stored = json.loads((path / "meta.json").read_text(encoding="utf-8")).get("data_sha256")
    except (OSError, ValueError, AttributeError):
        stored = None
    if not stored or not checksums:
        return
    for (old_file, old_sum), (new_file, new_sum) in zip(
        sorted(stored.items()), sorted(checksums.items()), strict=False
    ):
        if old_sum != new_sum:
            raise HlrmError(
                f"cannot resume {path}: the data changed since it was trained ({new_file} has "
                f"sha256 {new_sum[:12]}…, the run was trained on {old_file} with "
                f"{old_sum[:12]}…); train a new run in another --run-dir"
            )
    if len(stored) != len(checksums):
        raise HlrmError(f"cannot resume {path}: its data files changed since it was trained")


def write_evaluation(path: Path, result: EvaluationResult) -> None:
    write_json(path / "metrics.json", {**result.metrics, "protocol": result.protocol})
    with atomic_path(path / "per_user_metrics.parquet") as tmp:
        result.per_user.to_parquet(tmp, index=False)


def train(
    config: RunConfig,
    run_dir: str | Path | None = None,
    *,
    split: SplitData | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Run:
    """Load the data, train, select the best epoch and evaluate on test (the CLI's ``train``).

    ``split``: data already split in memory (the estimator API) instead of ``config.data``.
    Without a test part nothing is evaluated (``metrics`` holds only a note: :data:`NO_TEST`).

    With ``config.final`` the model is fitted for deployment: first an ordinary run on the split
    (written to ``<run-dir>/validation``, test metrics included where the split has a test
    share) chooses the number of epochs on validation, then the model is refit on every
    interaction of every part for exactly that many epochs (none when validation kept the
    starting weights of a two-stage model); the final run has no test part.
    Without a validation part the configured epochs are trained; models fitted in closed form
    (item-kNN, EASE, ALS, popularity) are simply fitted on everything.
    ``log`` receives notes about data on which the defaults are likely poor.
    """
    config = config.resolved()
    path = None if run_dir is None else Path(run_dir)
    if not distributed.is_main():  # under torchrun, rank 0 alone talks and writes
        progress, log = False, None
    if path is not None:
        _check_run_directory(path, resume)
    if config.final and resume:
        raise ConfigError("a final fit cannot be resumed; start it again in a new directory")
    checksums = None if path is None else data_checksums(config.data)
    if resume and path is not None:
        _check_same_data(path, checksums)
    torch.manual_seed(config.seed)
    if split is None:
        split = load_split(config.data)
    if log is not None:
        for step in split.preprocessing:
            log(str(step))
        for note in data_notes(split):
            log(f"note: {note}")
    check_training(config, split)  # sizes against memory, before anything is allocated
    meta = {"data_sha256": checksums}
    if not config.final:
        return _fit(
            config, config.train, split, path, resume=resume, progress=progress, log=log, meta=meta
        )
    epochs, chosen_by = config.train.epochs, "the configured number of epochs"
    validation = None
    if MODELS[config.model.name].trainable and split.valid.nnz:
        validation_dir = None if path is None else path / VALIDATION
        validation = train(
            dataclasses.replace(config, final=False), validation_dir, split=split, progress=progress
        )
        epochs = validation.best_epoch  # 0: validation kept the starting weights (keep_start)
        chosen_by = f"the best validation epoch of the run in {VALIDATION}/"
        if log is not None:
            log(f"final fit: {epochs} epochs (best on validation) on every interaction")
        if getattr(validation.model, "blend_grid", ()):  # the weight validation chose, fixed
            params = {**config.model.params, "blend": validation.model.blend}
            config = dataclasses.replace(
                config, model=dataclasses.replace(config.model, params=params)
            )
    elif MODELS[config.model.name].trainable and log is not None:
        log(f"note: no validation part to choose the epochs on; the final fit trains {epochs}")
    torch.manual_seed(config.seed)
    refit = dataclasses.replace(
        config.train, epochs=max(1, epochs), patience=0, select_by=LOSS_SELECTION
    )
    run = _fit(
        config,
        refit,
        everything_in_train(split),
        path,
        progress=progress,
        log=log,
        meta={**meta, "final": {"epochs": epochs, "chosen_by": chosen_by}},
        start=None if validation is None else validation.first_stage,
        fit=epochs > 0,
    )
    run.validation = validation
    return run


def everything_in_train(split: SplitData) -> SplitData:
    """``split`` with every interaction of every part in train and empty validation and test:
    the data of a model fitted for deployment."""
    empty = sp.csr_matrix(split.train.shape, dtype=np.float32)
    return SplitData(
        split.everything,
        empty,
        empty.copy(),
        user_ids=split.user_ids,
        item_ids=split.item_ids,
        name=split.name,
        item_titles=split.item_titles,
    )


def save(run: Run, path: str | Path) -> Path:
    """Write ``run`` (trained in memory, e.g. by the estimator API) as a run directory that
    :meth:`Run.open` reads back: configuration, split, weights and metrics. The files are written
    into a hidden directory beside ``path`` and renamed into place, so ``path`` is either absent
    or complete; an existing ``path`` must be an empty directory (nothing of yours is replaced).
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise HlrmError(f"{path} exists and is not an empty directory; choose a new path")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write_text(staging / CONFIG, run.config.to_toml())
        run.split.save(str(staging / "split.npz"))
        write_json(staging / "meta.json", _meta(run.config, {"saved_from_memory": True}))
        save_checkpoint(staging / BEST, model_state(run.model))
        if run.metrics is not None:
            write_json(staging / "metrics.json", run.metrics)
        if path.exists():
            path.rmdir()
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _meta(config: RunConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``meta.json``: versions, device, time and command line of a run."""
    return {
        "hlrm_version": hlrm.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(resolve_device(config.train.device)),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "processes": distributed.world_size(),
        **(extra or {}),
    }


def _check_run_directory(path: Path, resume: bool) -> None:
    if resume and not (path / "checkpoints" / "last.pt").is_file():
        raise HlrmError(f"cannot resume: {path} has no checkpoints/last.pt")
    if path.exists() and not path.is_dir():
        raise HlrmError(f"--run-dir {path} is a file, not a directory")
    if not resume and (path / "checkpoints" / "last.pt").is_file():
        raise HlrmError(f"{path} already holds a run; choose another --run-dir or --resume")
    foreign = (
        []
        if resume or not path.is_dir()
        else sorted(entry.name for entry in path.iterdir() if entry.name not in OWN_ENTRIES)
    )
    if foreign:
        raise HlrmError(
            f"{path} is not empty ({', '.join(foreign[:3])}); a run needs a new or empty "
            f"directory so that nothing of yours is overwritten"
        )


def _fit(
    config: RunConfig,
    train_config: TrainConfig,
    split: SplitData,
    path: Path | None,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    meta: dict[str, Any] | None = None,
    start: Recommender | None = None,
    fit: bool = True,
) -> Run:
    """Train ``config``'s model on ``split`` with ``train_config`` (the configuration's own
    options, or a final refit's), keep the best epoch, evaluate on test where there is one, and
    write the run (``config`` is what ``config.toml`` records). The model starts from ``start``
    (a final refit: the first stage of its validation run), else from its pretraining stage or
    ``init_from``; ``fit=False`` keeps those starting weights untrained (a final refit whose
    validation run kept its start, epoch 0)."""
    model = create_model(config.model.name, split.n_users, split.n_items, **config.model.params)
    first_stage = start
    if start is not None:
        _warm_start(model, start, "the first stage of the validation run")
    else:
        first_stage = start_from(model, config, path, split, progress=progress, log=log)

    # Under torchrun every rank trains and evaluates, and rank 0 alone writes the run.
    writes = path is not None and distributed.is_main()

    def log_epoch(_: EpochRecord) -> None:
        if writes:
            frame = pd.DataFrame([vars(r) for r in trainer.history])
            write_text(path / "history.csv", frame.to_csv(index=False))

    # Every check of the configuration against the data and the device happens here, and a
    # resumed run's checkpoint is checked, before anything in the run directory is (re)written.
    trainer = Trainer(
        model,
        split,
        train_config,
        seed=config.seed,
        checkpoint_dir=None if path is None else path / "checkpoints",
        progress=progress,
        on_epoch=log_epoch,
    )
    if resume and path is not None:
        _check_resumable(config, path)
        trainer.resume()
    distributed.barrier()  # every rank has checked the directory before rank 0 writes in it
    lock = lock_run_directory(path) if writes else None
    try:
        if writes:
            for directory in (path, path / "checkpoints"):  # left by a write killed mid-rename
                remove_stale_temporaries(directory)
            write_text(path / CONFIG, config.to_toml())
            if not resume:
                with atomic_path(path / "split.npz") as tmp:
                    split.save(str(tmp))
            write_json(path / "meta.json", _meta(config, meta))
        if fit:
            trainer.fit()
            trainer.load_best()
            if trainer.blend_values is not None:
                _record_blend(trainer.blend_values, path if writes else None, log)
        else:
            trainer.save_best()
        run = Run(config, split, model, path, best_epoch=trainer.best_epoch)
        run.first_stage = first_stage
        if split.test.nnz:
            result = run.evaluate(device=config.train.device)
            run.metrics = {**result.metrics, "protocol": result.protocol}
            if writes:
                write_evaluation(path, result)
        else:  # metrics.json still marks the run finished (it is written last)
            run.metrics = {"protocol": {"target": None, "note": NO_TEST}}
            if writes:
                write_json(path / "metrics.json", run.metrics)
    finally:
        if lock is not None:
            lock.close()  # releases the lock
    return run


def _record_blend(
    values: dict[str, Any], path: Path | None, log: Callable[[str], None] | None
) -> None:
    """The blend weight chosen on validation after training (CML-EASE), in ``meta.json`` and
    the log."""
    scores = ", ".join(f"{weight:g}: {value:.4f}" for weight, value in values["validation"].items())
    if log is not None:
        log(f"blend weight {values['chosen']:g} chosen on validation {values['metric']} ({scores})")
    if path is not None:
        written = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        write_json(path / "meta.json", {**written, "blend": values})


def pretrain_config(config: RunConfig) -> RunConfig:
    """The first stage of a run with ``pretrain``: that model with its own default recipe on
    the same data, seed, evaluation and device, and the embedding size of the second stage."""
    params = {key: config.model.params[key] for key in ("dim", "max_norm")}
    train = TrainConfig(
        batch_size=config.train.batch_size,
        device=config.train.device,
        deterministic=config.train.deterministic,
    )
    stage = RunConfig(config.seed, config.data, ModelConfig(config.train.pretrain, params), train)
    return dataclasses.replace(stage, eval=config.eval).resolved()


def start_from(
    model: Recommender,
    config: RunConfig,
    path: Path | None,
    split: SplitData,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Recommender | None:
    """Give ``model`` the starting embeddings ``config`` asks for: its pretraining stage
    (trained, or reused from ``<path>/pretrain``) or the run named by ``init_from``; nothing
    for a start from random weights. Returns the first stage (None otherwise). Every way of
    training a configuration (a run, a tuning trial) starts here, so none starts elsewhere."""
    if config.train.pretrain not in (None, "none"):
        first_stage = _pretrained(config, path, progress, log, split)
        _warm_start(model, first_stage, "pretraining")
        return first_stage
    if config.init_from:
        source = model_from_checkpoint(
            load_checkpoint(Path(config.init_from) / BEST, "cpu"), config.init_from
        )
        _warm_start(model, source, config.init_from)
    return None


def _pretrained(
    config: RunConfig,
    path: Path | None,
    progress: bool,
    log: Callable[[str], None] | None,
    split: SplitData,
) -> Recommender:
    """The trained first stage of ``config`` on ``split``, kept in ``<run dir>/pretrain`` (a run
    directory of its own): reused when it finished earlier, resumed when it was interrupted.
    The stage chooses its epochs on validation, so ``split`` needs a validation part."""
    if not split.valid.nnz:
        raise ConfigError(
            f"{config.model.name} trains in two stages (pretrain = {config.train.pretrain!r}), "
            "whose first chooses its epochs on validation: give the split a validation share, "
            "or set pretrain = 'none'"
        )
    stage = None if path is None else path / PRETRAIN
    wanted = pretrain_config(config)
    if stage is not None and (stage / "metrics.json").is_file():
        finished = Run.open(stage)
        if finished.config.to_dict() != wanted.to_dict():
            raise HlrmError(
                f"{stage} holds a first stage trained with other options or data; delete it "
                f"or choose another --run-dir"
            )
        return finished.model
    if log is not None:
        log(
            f"note: stage 1 of 2: {config.train.pretrain} with its default recipe, whose "
            f"embeddings start {config.model.name} (pretrain = 'none' starts from scratch)"
        )
    resume = stage is not None and (stage / "checkpoints" / "last.pt").is_file()
    run = train(wanted, stage, split=split, resume=resume, progress=progress, log=None)
    if log is not None and run.metrics is not None:
        log(
            f"note: stage 2 of 2: {config.model.name}; the {config.train.pretrain} stage "
            f"reached test NDCG@10 {run.metrics.get('ndcg@10', float('nan')):.4f}"
        )
    return run.model


@dataclass
class Recommendation:
    rank: int
    item: int  # internal index
    item_id: str
    title: str | None
    score: float
    #: For explainable models (:data:`EXPLAINED`): what led to this item, module → rows
    #: (attention weights, each history item's effect on the score, LRML's related items).
    explanation: dict[str, list[dict[str, Any]]] | None = None


def recommend_many(
    run: Run,
    users: Sequence[object],
    k: int = 10,
    *,
    explain: bool = False,
    filter_seen: bool = True,
    seed: int | None = None,
    ann: AnnIndex | None = None,
) -> list[list[Recommendation]]:
    """Top-``k`` items for each known user (original ids), in the order given, scored in blocks
    of users on the model's device (:func:`~hlrm.evaluation.ranking.top_k_scored`).

    ``filter_seen``: never recommend what a user has in any part of the data (train, validation
    and test: a deployed model recommends what a user has not had yet); False recommends from
    every item. History-based models draw each user's pool from the same items, keyed by
    ``seed`` (the run's seed by default) and the user alone, so a user's list is the same whether
    ranked alone or with others. An unknown id is an :class:`~hlrm.errors.UnknownIdError` naming
    every unknown id of the request. ``ann``: rank only the candidates of an approximate index,
    re-scored exactly (:mod:`hlrm.retrieval`); None ranks every item.
    """
    indices = run.split.users.indices(users)
    return _recommend_indices(
        run, run.model, run.split.everything, indices, k, explain, filter_seen, seed, ann
    )


#: Columns of :func:`recommend_table` (``title`` only where the run has titles).
TABLE_COLUMNS = ("user_id", "rank", "item_id", "score", "title")


def recommend_table(
    run: Run,
    users: Sequence[object] | None = None,
    k: int = 10,
    *,
    filter_seen: bool = True,
    seed: int | None = None,
    ann: AnnIndex | None = None,
) -> pd.DataFrame:
    """:func:`recommend_many` as one table for batch output and DataFrame users: a row per
    (user, rank) with columns :data:`TABLE_COLUMNS`, ids in the types the data held (int64 or
    str), users in the order given (``None``: every user of the run). Built from the ranked
    arrays directly, without a Python object per row."""
    split = run.split
    indices = np.arange(split.n_users) if users is None else split.users.indices(users)
    items, scores = _top_lists(run, run.model, split.everything, indices, k, filter_seen, seed, ann)
    found = items != PAD
    columns: dict[str, Any] = {
        "user_id": np.repeat(split.user_ids[indices], found.sum(axis=1)),
        "rank": np.nonzero(found)[1] + 1,
        "item_id": split.item_ids[items[found]],
        "score": scores[found].astype(np.float64),
    }
    if split.item_titles is not None:
        columns["title"] = split.item_titles[items[found]]
    return pd.DataFrame(columns)


def recommend(
    run: Run,
    *,
    user: object | None = None,
    items: list[object] | None = None,
    k: int = 10,
    explain: bool = False,
    seed: int | None = None,
    ann: AnnIndex | None = None,
) -> list[Recommendation]:
    """Top-``k`` unseen items for a known ``user`` (original id, :func:`recommend_many`) or a
    new user given by ``items``, who is folded in (:mod:`hlrm.training.foldin`) and never gets
    the given items back."""
    from hlrm.training.foldin import fold_in_user

    if (user is None) == (items is None):
        raise ConfigError("give either a known user id or a list of item ids, not both")
    if items is None:
        return recommend_many(run, [user], k, explain=explain, seed=seed, ann=ann)[0]
    _check_k(k)
    seed = run.config.seed if seed is None else seed
    indices = run.split.items.indices(list(items))
    model, known = fold_in_user(run.model, run.split.train_valid, indices, seed=seed)
    new_user = np.array([model.n_users - 1])
    return _recommend_indices(run, model, known, new_user, k, explain, True, seed, ann)[0]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, not {k!r}")


def model_device(model: Recommender) -> torch.device:
    return next(iter(model.state_dict().values())).device


def _recommend_indices(
    run: Run,
    model: Recommender,
    known: sp.csr_matrix,
    users: np.ndarray,
    k: int,
    explain: bool,
    filter_seen: bool,
    seed: int | None,
    ann: AnnIndex | None = None,
) -> list[list[Recommendation]]:
    """Ranked lists for the internal ``users`` of ``model``; ``known`` (n_users, n_items) holds
    each user's items: the history pools, and the mask when ``filter_seen``."""
    seed = run.config.seed if seed is None else seed
    items, scores = _top_lists(run, model, known, users, k, filter_seen, seed, ann)
    explains = explain and hasattr(model, "explain")
    sampler = _pool_sampler(run, model, known, seed) if explains else None
    lists = []
    for user, row, values in zip(users.tolist(), items, scores, strict=True):
        keep = row != PAD
        row, values = row[keep], values[keep]
        explanations = None
        if explains and len(row):
            explanations = _explanations(model, known, sampler, user, row)
        lists.append(_ranked_list(run.split, row, values, explanations))
    return lists


def _top_lists(
    run: Run,
    model: Recommender,
    known: sp.csr_matrix,
    users: np.ndarray,
    k: int,
    filter_seen: bool,
    seed: int | None,
    ann: AnnIndex | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores), both (len(users), k), best first, padded with :data:`PAD` / -inf
    (:func:`~hlrm.evaluation.ranking.top_k_scored` with deployed pools and masks, or the
    candidates of ``ann`` re-scored exactly)."""
    _check_k(k)
    seed = run.config.seed if seed is None else seed
    exclude = known if filter_seen else sp.csr_matrix(known.shape, dtype=np.float32)
    sampler = _pool_sampler(run, model, known, seed)
    device = model_device(model)
    if ann is not None:
        return ann.top_k_scored(model, users, exclude, k, history_sampler=sampler, device=device)
    return top_k_scored(
        model,
        users,
        exclude,
        k,
        history_sampler=sampler,
        device=device,
        memory_mib=run.config.eval.memory_mib,
    )


def _pool_sampler(
    run: Run, model: Recommender, known: sp.csr_matrix, seed: int
) -> HistorySampler | None:
    """The history pools of deployed recommendations: drawn from everything a user has, keyed
    by (seed, user) so that they do not depend on the batch; None for models without history.
    Kept on ``run`` for its own model and data (a fold-in brings a new model and matrix)."""
    if not model.uses_history:
        return None
    cached = model is run.model and known is run.split.everything
    device = model_device(model)
    sampler = run._samplers.get(seed) if cached else None
    if sampler is None or sampler.device != device:
        sampler = HistorySampler(
            known, model.history_size, model.history_sampling, device, keyed_seed=seed
        )
        if cached:
            run._samplers[seed] = sampler
    return sampler


def _explanations(
    model: Recommender,
    known: sp.csr_matrix,
    sampler: HistorySampler | None,
    user: int,
    items: np.ndarray,
) -> list[Explanation]:
    """``model.explain`` of the internal ``items`` for the internal ``user``: with the pool the
    user's scores were computed from, or (models without a history, LRML) every item the user
    has in ``known``."""
    device = model_device(model)
    user_t = torch.tensor([user], device=device)
    if sampler is not None:
        history = sampler.sample(user_t)
    else:
        owned = torch.from_numpy(known[user].indices.astype(np.int64)).to(device).unsqueeze(0)
        history = History(owned, torch.ones_like(owned, dtype=torch.bool))
    with torch.no_grad():
        return model.explain(user, torch.from_numpy(items).to(device), history)


def explain(
    run: Run, user: object, items: Sequence[object], *, seed: int | None = None
) -> list[dict[str, list[dict[str, Any]]]]:
    """What led the model to score each of ``items`` (original ids) as it does for the known
    ``user``, from the same history pool :func:`recommend_many` ranks with; see
    :attr:`Recommendation.explanation`. Models without an explanation refuse."""
    model = run.model
    if not hasattr(model, "explain"):
        raise ConfigError(f"{model.name} has no explanation; {', '.join(EXPLAINED)} have one")
    index = run.split.users.index(user)
    indices = run.split.items.indices(items)
    seed = run.config.seed if seed is None else seed
    known = run.split.everything
    sampler = _pool_sampler(run, model, known, seed)
    return [
        _label_explanation(explanation, run.split)
        for explanation in _explanations(model, known, sampler, index, indices)
    ]


def _ranked_list(
    split: SplitData,
    items: np.ndarray,
    scores: np.ndarray,
    explanations: list[Explanation] | None = None,
) -> list[Recommendation]:
    ids = np.asarray(split.item_ids)[items].astype(str).tolist()
    titles = (
        [None] * len(ids)
        if split.item_titles is None
        else np.asarray(split.item_titles)[items].astype(str).tolist()
    )
    return [
        Recommendation(
            rank + 1,
            item,
            item_id,
            title,
            score,
            None if explanations is None else _label_explanation(explanations[rank], split),
        )
        for rank, (item, item_id, title, score) in enumerate(
            zip(items.tolist(), ids, titles, scores.tolist(), strict=True)
        )
    ]


def similar_items(run: Run, items: Sequence[object], k: int = 10) -> list[list[Recommendation]]:
    """The ``k`` items most similar to each of ``items`` (original ids), in the order given, by
    the model's own item-item similarity (:meth:`~hlrm.models.base.Recommender.item_similarity`:
    closeness of item embeddings for the metric models, cosine of the factors for BPR and ALS,
    the item-item weights for item-kNN and EASE; popularity has none and refuses). A query item
    is never its own neighbour; ``score`` is the similarity. Queries go in blocks whose (Q,
    n_items) similarity matrix stays within the model's ``block_elements``."""
    from hlrm.evaluation.ranking import top_items

    _check_k(k)
    queries = run.split.items.indices(items)
    model = run.model
    device = model_device(model)
    depth = min(k, model.n_items)
    block = max(1, model.block_elements // max(1, model.n_items))
    was_training = model.training
    model.eval()
    lists: list[list[Recommendation]] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(queries), block):
                chunk = torch.from_numpy(queries[start : start + block]).to(device)
                similarity = model.item_similarity(chunk).to(torch.float32, copy=True)
                if torch.isnan(similarity).any():
                    raise HlrmError(f"{model.name} produced NaN similarities")
                similarity[torch.arange(len(chunk), device=device), chunk] = -torch.inf
                values, top = top_items(similarity, depth)
                for row, scores in zip(top.cpu().numpy(), values.cpu().numpy(), strict=True):
                    keep = np.isfinite(scores)
                    lists.append(_ranked_list(run.split, row[keep], scores[keep]))
    finally:
        model.train(was_training)
    return lists


def _title(split: SplitData, item: int) -> str | None:
    return None if split.item_titles is None else str(split.item_titles[item])


def _label_explanation(
    explanation: Explanation, split: SplitData, top: int = 5
) -> dict[str, list[dict[str, Any]]]:
    """An :class:`~hlrm.models.memory.Explanation` in original ids and titles, ``top`` rows per
    module:

    * each attention module (``user_attention``, ``item_attention``, ``history_attention``):
      its heaviest entries with their ``weight`` and the module's ``uniform`` weight 1/n (n
      valid entries: a weight near it says the module did not single the entry out), history
      items also with their ``effect`` and ``share`` (below), special slots as ``slot``;
    * ``history_effect`` (models with a history pool): the pool items that raised the score
      most, ``effect`` = the score minus the score without that item in the pool, ``share`` =
      the effect over the sum of every pool item's absolute effect;
    * ``related`` (LRML): the user's items whose relation is closest to this item's, with the
      cosine ``similarity`` of the two relation vectors.
    """
    effects = explanation.effects or {}
    total = sum(abs(value) for value in effects.values())

    def item_row(item: int) -> dict[str, Any]:
        row: dict[str, Any] = {"item_id": str(split.item_ids[item]), "title": _title(split, item)}
        if item in effects:
            row["effect"] = effects[item]
            row["share"] = effects[item] / total if total > 0 else 0.0
        return row

    modules: dict[str, list[dict[str, Any]]] = {}
    for module, pairs in explanation.attention.items():
        uniform = 1.0 / len(pairs) if pairs else 0.0
        modules[module] = [
            {
                **(item_row(label) if isinstance(label, int) else {"slot": label}),
                "weight": weight,
                "uniform": uniform,
            }
            for label, weight in pairs[:top]
        ]
    if explanation.effects is not None:
        strongest = sorted(effects, key=lambda item: -effects[item])[:top]
        modules["history_effect"] = [item_row(item) for item in strongest]
    if explanation.related is not None:
        modules["related"] = [
            {**item_row(item), "similarity": similarity}
            for item, similarity in explanation.related[:top]
        ]
    return modules
