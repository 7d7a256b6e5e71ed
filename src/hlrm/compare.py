"""Compare several models under one protocol and write a report a paper can cite.

A comparison config is a run configuration (``seed``, ``[data]``, ``[train]``, ``[eval]``; it may
``include`` a protocol preset from ``configs/protocols/``) plus::

    [compare]
    models = ["popularity", "cml", "lrml"]   # labels; a label is a model name or a [models.X]
    baseline = "cml"                          # default: the first model
    seeds = [1, 2, 3]                         # optional: one run per seed, mean ± std over seeds
    metrics = ["ndcg", "recall@20"]           # optional: restrict the table (and tests)
    alpha = 0.05                              # significance level after Holm correction
    [[compare.published]]                     # optional reference rows (numbers from a paper)
    name = "LightGCN (published)"
    source = "He et al., SIGIR 2020"
    metrics = { "recall@20" = 0.1830, "ndcg@20" = 0.1554 }

    [model]                                   # optional: options for every model that has them
    dim = 64
    [models.lrml]                             # per-model training or model options
    lr = 1e-3
    n_slots = 10
    [models.hlr-unpop]                        # a second variant of one model, under a new label
    model = "hlr"
    history_sampling = "unpop"
    [models.hlr-warm]                         # warm-started from the (same-seed) run of another
    model = "hlr"                             # label listed before it
    init_from = "cml"

Every model is trained (or its run reused) under the same data, split and evaluation options, so
the per-user metrics pair up user by user for the significance tests
(:mod:`hlrm.evaluation.significance`). ``--seeds`` varies the model seed (initialisation,
sampling, the evaluation's cohort draw) and keeps the data split fixed, so every seed is tested on
the same held-out interactions.

The report directory::

    compare.toml          the resolved comparison config: `hlrm compare --config` rebuilds it
    commands.sh           the exact commands: the comparison and every run on its own
    table.md              one table per cut-off k, models as rows, marks for significance
    table.csv             long format: one row per (model, metric) with mean, std and p-values
    table.json            everything above plus the protocol and the runs
    plots/*.png           metric bars, NDCG@k over k, training curves (needs matplotlib)
    runs/<label>[/seed-<s>]/   one run directory per model (and seed), see hlrm.runs

Re-running a comparison with the same report directory reuses every finished run whose
configuration matches, resumes an interrupted one from its last checkpoint, and refuses to mix in
a run trained under a different configuration.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomli_w

from hlrm import plots
from hlrm.config import RunConfig
from hlrm.errors import ConfigError
from hlrm.evaluation.significance import PairedTest, compare_to_baseline
from hlrm.fileio import atomic_path, write_json, write_text
from hlrm.models.base import canonical_name, model_parameters
from hlrm.runs import CONFIG, train
from hlrm.training.trainer import INTRODUCED_LATER, TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Column order of the table at each k: standard metrics, the HLR code's variants, beyond-accuracy.
TABLE_ORDER = (
    "ndcg", "recall", "precision", "hit", "map", "mrr",
    "paper_map", "paper_mrr", "paper_hitrate", "global_ndcg", "local_ndcg",
    "coverage", "popularity",
)  # fmt: skip
#: Metrics identical by definition to another one: not tested twice (that would only weaken the
#: Holm correction), they show their twin's marks.
TWINS = {"paper_hitrate": "recall", "global_ndcg": "ndcg"}
#: Metrics measured over a list of users, not per user: shown, never tested.
LIST_METRICS = ("coverage", "popularity")
WILCOXON_MARK, TTEST_MARK = "*", "†"
#: Lead a cell's marks: the side of the baseline the model is on.
UP, DOWN = "↑", "↓"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_COMPARE_KEYS = {"models", "baseline", "seeds", "metrics", "alpha", "published"}
_TRAIN_OPTIONS = {f.name for f in dataclasses.fields(TrainConfig)}


# ---- configuration -------------------------------------------------------------------------------
@dataclass
class Published:
    """A reference row copied from a paper: shown in the table, never tested."""

    name: str
    metrics: dict[str, float]
    source: str = ""


@dataclass
class CompareConfig:
    """What to compare and under which protocol (see the module docstring for the TOML form)."""

    base: RunConfig = field(default_factory=RunConfig)
    models: list[str] = field(default_factory=list)
    baseline: str | None = None
    seeds: list[int] = field(default_factory=list)
    #: Metric names ("ndcg": every k) or keys ("ndcg@10") to report; empty: all.
    metrics: list[str] = field(default_factory=list)
    alpha: float = 0.05
    published: list[Published] = field(default_factory=list)
    #: [model]: options applied to every compared model that has them.
    shared: dict[str, Any] = field(default_factory=dict)
    #: [models.<label>]: training or model options of one label (and "model" for a variant).
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, path: str | Path) -> CompareConfig:
        return cls.from_dict(read_toml(path), str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "configuration") -> CompareConfig:
        raw = dict(raw)
        section = _table(raw.pop("compare", {}), "[compare]", source)
        shared = _table(raw.pop("model", {}), "[model]", source)
        if "name" in shared:
            raise ConfigError(
                f"{source}: [model] name has no place in a comparison: list the models in "
                f"[compare] models"
            )
        overrides = _table(raw.pop("models", {}), "[models]", source)
        unknown = sorted(set(section) - _COMPARE_KEYS)
        if unknown:
            raise ConfigError(f"{source}: unknown option(s) in [compare]: {', '.join(unknown)}")
        try:
            config = cls(
                base=RunConfig.from_dict(raw, source),
                models=_strings(section.get("models", []), "models"),
                baseline=None if section.get("baseline") is None else str(section["baseline"]),
                seeds=[_integer(s, "seeds") for s in _list(section.get("seeds", []), "seeds")],
                metrics=_strings(section.get("metrics", []), "metrics"),
                alpha=float(section.get("alpha", 0.05)),
                published=[
                    _published(entry, source)
                    for entry in _list(section.get("published", []), "published")
                ],
                shared=shared,
                overrides={
                    str(label): _table(table, f"[models.{label}]", source)
                    for label, table in overrides.items()
                },
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: malformed [compare] option: {exc}") from None
        return config

    def to_dict(self) -> dict[str, Any]:
        """The TOML form; the base run configuration without its (meaningless) model name."""
        out = {k: v for k, v in self.base.to_dict().items() if k != "model"}
        section: dict[str, Any] = {"models": self.models, "alpha": self.alpha}
        if self.baseline is not None:
            section["baseline"] = self.baseline
        if self.seeds:
            section["seeds"] = self.seeds
        if self.metrics:
            section["metrics"] = self.metrics
        if self.published:
            section["published"] = [
                {"name": p.name, "source": p.source, "metrics": p.metrics} for p in self.published
            ]
        out["compare"] = section
        if self.shared:
            out["model"] = self.shared
        if self.overrides:
            out["models"] = self.overrides
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    # ---- resolution --------------------------------------------------------------------------
    def validate(self) -> None:
        """Check everything that can be checked before training, so a typo costs nothing."""
        if not self.models:
            raise ConfigError("no models to compare: list them in [compare] models or --models")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models are listed twice: {', '.join(self.models)}")
        for label in self.models:
            if not _LABEL.match(label):
                raise ConfigError(
                    f"model label {label!r} must be letters, digits and _ . + - (it names a "
                    f"directory)"
                )
        if self.baseline is not None and self.baseline not in self.models:
            raise ConfigError(
                f"baseline {self.baseline!r} is not among the compared models "
                f"({', '.join(self.models)})"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds are listed twice: {self.seeds}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must lie strictly between 0 and 1, not {self.alpha}")
        if not self.base.data.dataset and not self.base.data.path:
            raise ConfigError("say what to compare on: [data] dataset or path, or --dataset")
        for label, table in self.overrides.items():
            if label not in self.models and "model" not in table:
                canonical_name(label)  # a typo in [models.X] must not pass silently
            source = table.get("init_from")
            if source is not None and label in self.models:
                earlier = self.models[: self.models.index(label)]
                if source not in earlier:
                    raise ConfigError(
                        f"[models.{label}] init_from = {source!r}: name a model listed before "
                        f"{label!r} in [compare] models (its run is the starting point)"
                    )
        self.base.eval.validate()
        configs = {label: self.run_config(label) for label in self.models}
        for name in self.shared:
            if not any(name in c.model.params for c in configs.values()):
                raise ConfigError(f"[model] {name}: none of the compared models has this option")
        keys = self.metric_keys()
        for entry in self.published:
            if entry.name in self.models:
                raise ConfigError(f"published row {entry.name!r} has the name of a compared model")
            for key in entry.metrics:
                _split_key(key)
                if key not in keys:
                    raise ConfigError(
                        f"published {entry.name!r}: {key} is not in the table (its cut-offs "
                        f"are {sorted(set(self.base.eval.ks))})"
                    )

    @property
    def baseline_label(self) -> str:
        return self.baseline or self.models[0]

    def run_config(self, label: str) -> RunConfig:
        """The configuration of ``label``: the base, the shared [model] options the model has,
        then its own [models.<label>] options (model options first, training options else)."""
        table = dict(self.overrides.get(label, {}))
        name = canonical_name(str(table.pop("model", label)))
        source = table.pop("init_from", None)
        accepted = model_parameters(name)
        config = RunConfig.from_dict(self.base.to_dict())
        config.model.name = name
        config.model.params = {k: v for k, v in self.shared.items() if k in accepted}
        for key, value in table.items():
            if key in accepted:
                config.model.params[key] = value
            elif key in _TRAIN_OPTIONS:
                setattr(config.train, key, value)
            else:
                raise ConfigError(
                    f"[models.{label}] {key}: neither a [train] option nor an option of model "
                    f"{name!r} (its options: {', '.join(sorted(accepted)) or 'none'})"
                )
        if source is not None:
            config.init_from = (Path("runs") / str(source)).as_posix()
        try:
            return config.resolved()
        except (TypeError, ValueError) as exc:  # a value of the wrong type, e.g. lr = "fast"
            raise ConfigError(f"the configuration of {label!r} is malformed: {exc}") from None

    def planned_runs(self) -> list[PlannedRun]:
        """Every run of the comparison, model by model, seed by seed."""
        runs = []
        for label in self.models:
            config = self.run_config(label)
            if len(self.seeds) < 2:
                if self.seeds:
                    config.seed = self.seeds[0]
                runs.append(PlannedRun(label, config.seed, config, Path("runs") / label))
                continue
            for seed in self.seeds:
                seeded = dataclasses.replace(config, seed=seed)
                if seeded.init_from:
                    seeded.init_from = f"{seeded.init_from}/seed-{seed}"
                runs.append(PlannedRun(label, seed, seeded, Path("runs") / label / f"seed-{seed}"))
        return runs

    def metric_keys(self) -> list[str]:
        """The metric keys of the table, in table order (every k of ``[eval] ks``)."""
        ks = sorted(set(self.base.eval.ks))
        every = [f"{name}@{k}" for k in ks for name in TABLE_ORDER]
        if not self.metrics:
            return every
        chosen = set()
        for entry in self.metrics:
            name, k = _split_key(entry) if "@" in entry else (entry, None)
            if name not in TABLE_ORDER:
                raise ConfigError(
                    f"unknown metric {entry!r}; metrics are: {', '.join(TABLE_ORDER)}"
                )
            if k is not None and k not in ks:
                raise ConfigError(f"metric {entry!r}: k={k} is not among the cut-offs {ks}")
            chosen.update([f"{name}@{k}"] if k is not None else [f"{name}@{c}" for c in ks])
        return [key for key in every if key in chosen]


def _table(value: Any, where: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {where} must be a table, not {value!r}")
    return dict(value)


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"[compare] {name} must be a list, not {value!r}")
    return value


def _strings(value: Any, name: str) -> list[str]:
    items = _list(value, name)
    if not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"[compare] {name} must be a list of names, not {value!r}")
    return list(items)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"[compare] {name} must hold integers, not {value!r}")
    return value


def _published(entry: Any, source: str) -> Published:
    if not isinstance(entry, dict) or "name" not in entry or "metrics" not in entry:
        raise ConfigError(
            f"{source}: each [[compare.published]] needs a name and a metrics table, not {entry!r}"
        )
    unknown = sorted(set(entry) - {"name", "metrics", "source"})
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [[compare.published]]: {unknown}")
    metrics = _table(entry["metrics"], "[[compare.published]] metrics", source)
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: published {key} must be a number, not {value!r}")
    return Published(
        str(entry["name"]), {k: float(v) for k, v in metrics.items()}, str(entry.get("source", ""))
    )


def _split_key(key: str) -> tuple[str, int]:
    name, _, k = key.partition("@")
    if not k.isdigit() or int(k) < 1:
        raise ConfigError(f"metric keys look like 'ndcg@10', not {key!r}")
    return name, int(k)


def read_toml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A TOML file with its ``include`` (a path or list of paths, relative to the file) merged
    underneath: included tables first, the file's own values on top, nested tables merged."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        raise ConfigError(f"{path}: include cycle ({' -> '.join(str(p) for p in _seen)})")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    includes = raw.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: include must be a path or a list of paths")
    merged: dict[str, Any] = {}
    for include in includes:
        merged = _merge(merged, read_toml(path.parent / include, (*_seen, resolved)))
    return _merge(merged, raw)


def _merge(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(under)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# ---- runs ----------------------------------------------------------------------------------------
@dataclass
class PlannedRun:
    label: str
    seed: int
    config: RunConfig
    #: Relative to the report directory.
    path: Path


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A run configuration without what does not change results (the device, the scoring
    memory budget)."""
    train_section = {k: v for k, v in config.get("train", {}).items() if k != "device"}
    eval_section = {k: v for k, v in config.get("eval", {}).items() if k != "memory_mib"}
    return {**config, "train": train_section, "eval": eval_section}


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    if "name" in a and a.get("name") != b.get("name"):  # another model: its options are moot
        return [f"{prefix}name: {a.get('name')!r} there, {b.get('name')!r} here"]
    out = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            out += _differences(left, right, f"{prefix}{key}.")
        elif left != right:
            out.append(f"{prefix}{key}: {left!r} there, {right!r} here")
    return out


def config_differences(stored: RunConfig, wanted: RunConfig) -> list[str]:
    """What differs between two run configurations ("train.epochs: 3 there, 5 here"), ignoring
    the device, which does not change what is learned."""
    return _differences(_comparable(stored.to_dict()), _comparable(wanted.to_dict()))


def located(planned: PlannedRun, report: Path) -> RunConfig:
    """``planned``'s configuration as trained: a warm start names its source run relative to the
    report, training needs the path itself."""
    if not planned.config.init_from:
        return planned.config
    return dataclasses.replace(planned.config, init_from=str(report / planned.config.init_from))


def check_run(planned: PlannedRun, report: Path) -> None:
    """Refuse a report whose run directory for ``planned`` was trained under another
    configuration: mixing it in would make the table compare unlike things."""
    path = report / planned.path
    if (path / CONFIG).is_file():
        stored = RunConfig.from_toml(path / CONFIG)
        missing = {k: v for k, v in INTRODUCED_LATER.items() if getattr(stored.train, k) is None}
        stored.train = dataclasses.replace(stored.train, **missing)
        source = Path(planned.config.init_from)
        if stored.init_from and Path(stored.init_from).parts[-len(source.parts) :] == source.parts:
            stored.init_from = planned.config.init_from  # the same source run, wherever the report
        differences = config_differences(stored, planned.config)
        if differences:
            raise ConfigError(
                f"{path} holds a run with another configuration ({'; '.join(differences[:3])}); "
                f"delete it to retrain, or write the report elsewhere"
            )


def ensure_run(planned: PlannedRun, report: Path, *, progress: bool = True) -> str:
    """Train ``planned`` into the report unless a matching run is there; returns "reused",
    "resumed" or "trained"."""
    check_run(planned, report)
    path = report / planned.path
    if (path / CONFIG).is_file():
        if (path / "metrics.json").is_file() and (path / "per_user_metrics.parquet").is_file():
            return "reused"
        if (path / "checkpoints" / "last.pt").is_file():
            train(located(planned, report), path, resume=True, progress=progress)
            return "resumed"
        shutil.rmtree(path)  # started, but stopped before anything worth resuming was written
    train(located(planned, report), path, progress=progress)
    return "trained"


@dataclass
class ModelResult:
    """A model's finished runs (one per seed) read back from their directories."""

    label: str
    model: str
    runs: list[PlannedRun]
    metrics: list[dict[str, Any]]
    per_user: pd.DataFrame
    histories: list[pd.DataFrame]

    @classmethod
    def load(cls, label: str, runs: list[PlannedRun], report: Path) -> ModelResult:
        metrics, per_user, histories = [], [], []
        for planned in runs:
            path = report / planned.path
            metrics.append(json.loads((path / "metrics.json").read_text(encoding="utf-8")))
            per_user.append(pd.read_parquet(path / "per_user_metrics.parquet"))
            history = path / "history.csv"
            histories.append(pd.read_csv(history) if history.is_file() else pd.DataFrame())
        return cls(
            label,
            runs[0].config.model.name,
            runs,
            metrics,
            pd.concat(per_user, ignore_index=True),
            histories,
        )

    def summary(self, keys: list[str]) -> dict[str, tuple[float, float]]:
        """key → (mean, std): over cohorts for one run (NaN std without cohorts), over seeds
        (sample std, ddof=1) for several."""
        out = {}
        for key in keys:
            values = [_number(m.get(key)) for m in self.metrics]
            if len(values) == 1:
                out[key] = (values[0], _number(self.metrics[0].get(f"{key}_std")))
            else:
                defined = np.array([v for v in values if not math.isnan(v)])
                mean = float(defined.mean()) if len(defined) else math.nan
                std = float(defined.std(ddof=1)) if len(defined) > 1 else math.nan
                out[key] = (mean, std)
        return out


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


# ---- the comparison ------------------------------------------------------------------------------
@dataclass
class Report:
    """What :func:`compare` wrote, in memory."""

    path: Path
    config: CompareConfig
    keys: list[str]
    #: label → key → (mean, std); models first, then published rows (std NaN).
    summary: dict[str, dict[str, tuple[float, float]]]
    tests: list[PairedTest]
    #: label → (seed → "reused" / "resumed" / "trained").
    statuses: dict[str, dict[int, str]]
    files: list[Path]

    def marks(self, label: str, key: str) -> str:
        """The significance marks of one cell (twins show the marks of their twin), led by the
        direction of the difference: ``↑*†`` is significantly above the baseline, ``↓*`` below."""
        name, k = _split_key(key)
        key = f"{TWINS.get(name, name)}@{k}"
        alpha = self.config.alpha
        for test in self.tests:
            if test.model == label and test.metric == key:
                marks = (WILCOXON_MARK if test.p_wilcoxon_holm < alpha else "") + (
                    TTEST_MARK if test.p_ttest_holm < alpha else ""
                )
                return (UP if test.delta > 0 else DOWN) + marks if marks else ""
        return ""


def compare(
    config: CompareConfig,
    out: str | Path,
    *,
    progress: bool = True,
    make_plots: bool = True,
    log: Callable[[str], None] = print,
    command: str | None = None,
) -> Report:
    """Train (or reuse) every run of ``config`` into ``out``, test against the baseline and write
    the tables, plots and rebuild commands. ``command`` is recorded as the invocation (default:
    this process's command line)."""
    config.validate()
    report = Path(out)
    planned = config.planned_runs()
    for run in planned:  # before any training: a conflict found late would waste hours
        check_run(run, report)
    report.mkdir(parents=True, exist_ok=True)
    write_text(report / "compare.toml", config.to_toml())
    statuses: dict[str, dict[int, str]] = {label: {} for label in config.models}
    for run in planned:
        status = ensure_run(run, report, progress=progress)
        statuses[run.label][run.seed] = status
        log(f"{run.label} (seed {run.seed}): {status} in {report / run.path}")

    results = {
        label: ModelResult.load(label, [r for r in planned if r.label == label], report)
        for label in config.models
    }
    keys = config.metric_keys()
    summary = {label: result.summary(keys) for label, result in results.items()}
    for entry in config.published:
        summary[entry.name] = {k: (v, math.nan) for k, v in entry.metrics.items()}
    tested = [k for k in keys if _split_key(k)[0] not in (*TWINS, *LIST_METRICS)]
    tests = compare_to_baseline(
        {label: result.per_user for label, result in results.items()},
        config.baseline_label,
        tested,
    )
    result = Report(report, config, keys, summary, tests, statuses, [])
    protocol = results[config.baseline_label].metrics[0].get("protocol", {})
    invocation = command if command is not None else shlex.join(["hlrm", *sys.argv[1:]])

    write_text(report / "table.md", _markdown(result, results, protocol))
    with atomic_path(report / "table.csv") as tmp:
        _long_table(result, results).to_csv(tmp, index=False)
    write_json(report / "table.json", _json(result, results, protocol, invocation))
    write_text(report / "commands.sh", _commands(planned, invocation))
    (report / "commands.sh").chmod(0o755)
    result.files = [report / name for name in ("table.md", "table.csv", "table.json")]
    result.files += [report / "compare.toml", report / "commands.sh"]
    if make_plots:
        if plots.available():
            result.files += _plots(result, results)
        else:
            log("plots skipped: matplotlib is not installed (pip install 'hlrm[plots]')")
    return result


def _plots(report: Report, results: dict[str, ModelResult]) -> list[Path]:
    directory = report.path / "plots"
    ks = sorted(set(report.config.base.eval.ks))
    main_k = 10 if 10 in ks else ks[-1]
    written = [directory / "metrics.png", directory / "ndcg_at_k.png"]
    plots.metric_bars(
        report.summary,
        main_k,
        written[0],
        baseline=report.config.baseline_label,
        marks=report.marks,
    )
    plots.ndcg_over_k(report.summary, ks, written[1])
    histories = {label: result.histories for label, result in results.items()}
    if plots.training_curves(histories, directory / "training_curves.png"):
        written.append(directory / "training_curves.png")
    return written


# ---- writers -------------------------------------------------------------------------------------
def _cell(key: str, mean: float, std: float) -> str:
    """Four decimals for rates, one for ``popularity`` (a count of interactions)."""
    digits = 1 if _split_key(key)[0] == "popularity" else 4
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _spread(config: CompareConfig, protocol: dict[str, Any]) -> str:
    if len(config.seeds) > 1:
        return f"mean ± sample std (ddof=1) over seeds {', '.join(map(str, config.seeds))}"
    if protocol.get("cohorts"):
        return f"mean ± std (ddof=0) over {protocol['cohorts']} cohort(s)"
    return "mean over the evaluated users (no cohorts, no seeds: no spread)"


def _users_text(protocol: dict[str, Any], seeds: int) -> str:
    users, candidates = protocol.get("users"), protocol.get("candidate_users")
    drawn = " (drawn with each run's seed)" if seeds > 1 else ""
    if protocol.get("selection") == "cohorts":
        return (
            f"{users} of {candidates} test users in {protocol.get('cohorts')} cohort(s) of "
            f"{protocol.get('cohort_size')}{drawn}"
        )
    if protocol.get("selection") == "sample":
        return f"a fixed-seed sample of {users} of {candidates} test users{drawn}"
    return f"all {users} test users"


def _data_text(config: RunConfig) -> str:
    data = config.data
    source = data.dataset or data.path
    threshold = "" if data.min_rating == -math.inf else f"ratings ≥ {data.min_rating:g}, "
    split = data.split
    if split not in ("given", "leave_one_out"):
        split += " " + "/".join(f"{f:g}" for f in data.fractions)
    core = ""
    if max(data.user_core, data.item_core) > 1:
        core = f"{data.user_core}/{data.item_core}-core users/items, "
    return f"{source} ({threshold}{core}{split} split, data seed {data.seed})"


def _markdown(report: Report, results: dict[str, ModelResult], protocol: dict[str, Any]) -> str:
    config = report.config
    base = results[config.baseline_label].runs[0].config
    n_tests = len(report.tests)
    lines = [
        f"# Comparison on {base.data.dataset or base.data.path}",
        "",
        f"- Data: {_data_text(base)}.",
        f"- Evaluation: {_users_text(protocol, len(config.seeds))}; exact full ranking over all "
        f"{protocol.get('n_items')} items, {' and '.join(protocol.get('masked', []))} items "
        f"masked, no sampled negatives.",
        f"- Values: {_spread(config, protocol)}.",
        f"- Significance against **{config.baseline_label}** on per-user values (users in both "
        f"runs): `{WILCOXON_MARK}` Wilcoxon signed-rank, `{TTEST_MARK}` paired t-test, each "
        f"p < {config.alpha:g} after Holm correction across {n_tests} (model, metric) tests; "
        f"`{UP}` marks a significant gain over the baseline, `{DOWN}` a significant loss. "
        f"`paper_hitrate` and `global_ndcg` equal `recall` and `ndcg` and show their marks; "
        f"`coverage` and `popularity` are not per-user and are not tested.",
        "- Rebuild: `commands.sh`; p-values in `table.csv` and `table.json`.",
    ]
    for entry in config.published:
        if entry.source:
            lines.append(f"- {entry.name}: published figures, {entry.source}.")
    by_k: dict[int, list[str]] = {}
    for key in report.keys:
        by_k.setdefault(_split_key(key)[1], []).append(key)
    for k, keys in by_k.items():
        names = [_split_key(key)[0] for key in keys]
        lines += ["", f"## @{k}", "", "| model | " + " | ".join(names) + " |"]
        lines.append("|---|" + "---:|" * len(names))
        for label, row in report.summary.items():
            shown = f"{label} (baseline)" if label == config.baseline_label else label
            cells = []
            for key in keys:
                mean, std = row.get(key, (math.nan, math.nan))
                cells.append(_cell(key, mean, std) + report.marks(label, key))
            lines.append(f"| {shown} | " + " | ".join(cells) + " |")
    lines += ["", "## Runs", "", *_runs_table(results)]
    return "\n".join(lines) + "\n"


def _runs_table(results: dict[str, ModelResult]) -> list[str]:
    """How each run was trained: epochs run of the budget, the epoch kept, time, warm start."""
    lines = [
        "| model | seed | epochs run / budget | kept epoch | training s | warm start from |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, result in results.items():
        for planned, history in zip(result.runs, result.histories, strict=True):
            source = planned.config.init_from
            warm = Path(source).relative_to("runs").as_posix() if source else "–"
            if planned.config.train.pretrain not in (None, "none"):
                warm = f"{planned.config.train.pretrain} (pretrained in the run)"
            if history.empty:  # fitted in closed form or counted, not trained by epochs
                lines.append(f"| {label} | {planned.seed} | – | – | – | {warm} |")
                continue
            kept = history.loc[history["best"].astype(bool), "epoch"]
            lines.append(
                f"| {label} | {planned.seed} | {int((history['epoch'] > 0).sum())} / "
                f"{planned.config.train.epochs} | "
                f"{int(kept.iloc[-1]) if len(kept) else '–'} | {history['seconds'].sum():.0f} | "
                f"{warm} |"
            )
    return lines


def _long_table(report: Report, results: dict[str, ModelResult]) -> pd.DataFrame:
    tests = {(t.model, t.metric): t for t in report.tests}
    rows = []
    for label, summary in report.summary.items():
        result = results.get(label)
        for key in report.keys:
            if key not in summary:
                continue
            mean, std = summary[key]
            name, k = _split_key(key)
            test = tests.get((label, f"{TWINS.get(name, name)}@{k}"))
            rows.append(
                {
                    "label": label,
                    "kind": "model" if result is not None else "published",
                    "model": result.model if result is not None else "",
                    "metric": key,
                    "mean": mean,
                    "std": std,
                    "runs": len(result.runs) if result is not None else 0,
                    "baseline": label == report.config.baseline_label,
                    "delta": None if test is None else test.delta,
                    "paired_users": None if test is None else test.n,
                    "p_wilcoxon": None if test is None else test.p_wilcoxon,
                    "p_wilcoxon_holm": None if test is None else test.p_wilcoxon_holm,
                    "p_ttest": None if test is None else test.p_ttest,
                    "p_ttest_holm": None if test is None else test.p_ttest_holm,
                    "marks": report.marks(label, key),
                }
            )
    return pd.DataFrame(rows)


def _json(
    report: Report,
    results: dict[str, ModelResult],
    protocol: dict[str, Any],
    invocation: str,
) -> dict[str, Any]:
    config = report.config
    models = {}
    for label, result in results.items():
        models[label] = {
            "model": result.model,
            "baseline": label == config.baseline_label,
            "runs": [
                {
                    "seed": run.seed,
                    "path": run.path.as_posix(),
                    "status": report.statuses[label][run.seed],
                    "config": run.config.to_dict(),
                }
                for run in result.runs
            ],
            "metrics": {
                key: {"mean": mean, "std": std}
                for key, (mean, std) in report.summary[label].items()
            },
        }
    return {
        "command": invocation,
        "baseline": config.baseline_label,
        "alpha": config.alpha,
        "spread": _spread(config, protocol),
        "seeds": config.seeds,
        "metrics": report.keys,
        "protocol": protocol,
        "models": models,
        "published": [dataclasses.asdict(p) for p in config.published],
        "tests": {
            "wilcoxon": "scipy.stats.wilcoxon on paired per-user differences, two-sided",
            "ttest": "scipy.stats.ttest_rel, two-sided",
            "correction": "Holm across every (model, metric) test, per kind of test",
            "marks": {
                WILCOXON_MARK: "wilcoxon",
                TTEST_MARK: "ttest",
                UP: "above the baseline",
                DOWN: "below the baseline",
            },
            "results": [t.to_dict() for t in report.tests],
        },
    }


def _commands(planned: list[PlannedRun], invocation: str) -> str:
    lines = [
        "#!/bin/sh",
        "# Rebuild this report. Run from anywhere: paths are relative to this directory.",
        'cd "$(dirname "$0")" || exit 1',
        "",
        "# The comparison as it was invoked:",
        f"#   {invocation}",
        "# Rebuild the tables and plots (finished runs under runs/ are reused):",
        "hlrm compare --config compare.toml --out .",
        "",
        "# Or train every run on its own, from its stored configuration, into a fresh directory:",
    ]
    for run in planned:
        fresh = Path("rebuilt") / run.path.relative_to("runs")
        config_path = shlex.quote((run.path / CONFIG).as_posix())
        lines.append(
            f"# hlrm train --config {config_path} --run-dir {shlex.quote(fresh.as_posix())}"
        )
    return "\n".join(lines) + "\n"
