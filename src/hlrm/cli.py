"""The ``hlrm`` command line: quickstart, datasets, train, evaluate, recommend."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hlrm.errors import ConfigError, HlrmError

if TYPE_CHECKING:
    from hlrm.config import RunConfig

# Nothing that imports torch, pandas or SciPy is imported at module level: ``hlrm --help`` and
# a mistyped option answer in a fraction of a second, and each command imports what it needs.
# ``hlrm`` itself (``hlrm/__init__``) sets the thread and OpenMP defaults before torch loads.

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Collaborative metric learning recommenders with latent relations.",
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


def show_version(value: bool) -> None:
    if value:
        from hlrm import __version__

        typer.echo(f"hlrm {__version__}")
        raise typer.Exit()


logger = logging.getLogger("hlrm")
#: Width for rich output that does not go to a terminal: rich would wrap it at 80 columns (a
#: pipe, a file, CI logs), which cut the compare table; there, a line is as long as it is.
WIDE = 10_000


def stdout_console() -> Console:
    probe = Console()
    if probe.is_terminal or os.environ.get("COLUMNS"):
        return probe
    return Console(width=WIDE)


class MessageFormatter(logging.Formatter):
    """Messages as they are, warnings prefixed ``warning:`` (errors never reach the log: the
    error boundary in :func:`main` prints them)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return f"warning: {message}" if record.levelno >= logging.WARNING else message


def configure_logging(level: int) -> None:
    """Send the ``hlrm`` loggers to stderr: through rich's handler on a terminal, as plain lines
    otherwise (rich pads every log line to the console's width). Called once per invocation,
    so the handler writes to the ``sys.stderr`` of that invocation."""
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(
            console=Console(stderr=True),
            show_time=False,
            show_level=False,
            show_path=False,
            markup=False,
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MessageFormatter())
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class Verbosity:
    """The app-wide ``--quiet`` / ``--verbose`` (a command's own ``--quiet`` does the same)."""

    quiet = False

    @classmethod
    def set(cls, quiet: bool, verbose: int = 0) -> None:
        cls.quiet = quiet
        level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
        configure_logging(level)

    @classmethod
    def progress(cls, quiet: bool = False) -> bool:
        """Whether to show progress bars; a command's ``--quiet`` also silences its messages."""
        if quiet and not cls.quiet:
            cls.set(True)
        return not cls.quiet


@app.callback()
def main_options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="Print the version."),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Only warnings and errors: no progress bars, no messages."
        ),
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Also debug messages.")
    ] = 0,
) -> None:
    """Collaborative metric learning recommenders with latent relations."""
    Verbosity.set(quiet, verbose)
    if several_processes() and ctx.invoked_subcommand not in PARALLEL_COMMANDS:
        raise ConfigError(
            f"hlrm {ctx.invoked_subcommand} runs in one process; under torchrun only "
            f"{' and '.join(PARALLEL_COMMANDS)} run on several (docs/scaling.md)"
        )


#: The commands ``torchrun --nproc-per-node N -m hlrm`` runs on N processes (hlrm.distributed).
PARALLEL_COMMANDS = ("train", "evaluate")


def several_processes() -> bool:
    """Whether torchrun started this process as one of several (read from the environment
    without importing torch, which ``hlrm --help`` must not load)."""
    return os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1")


def join_processes(device: str) -> bool:
    """Under torchrun, join the other processes (:func:`hlrm.distributed.init_from_env`) and
    silence every rank but 0; returns whether this process is the one that prints."""
    if not several_processes():
        return True
    from hlrm import distributed

    distributed.init_from_env(device)
    if not distributed.is_main():
        Verbosity.set(True)
    return distributed.is_main()


datasets_app = typer.Typer(help="List the known datasets, or show one after preprocessing.")
app.add_typer(datasets_app, name="datasets")
console = stdout_console()


# ---- option conventions --------------------------------------------------------------------------
# Every option's help shows the value used when it is not given. Most options default to None
# ("not given": the configuration file, the dataset or the model's training recipe decides), so
# the value shown is written here: the modules that hold the real defaults import torch, which
# ``--help`` must not load. tests/test_cli_conventions.py checks each entry against them.
DEFAULTS = {
    "model": "cml",
    "format": "from the file name",
    "user_col": "found by name: user, user_id, userId, uid, ...",
    "item_col": "found by name: item, item_id, movieId, ...",
    "rating_col": "found by name (rating, score, weight, ...), else none",
    "timestamp_col": "found by name (timestamp, time, ts, ...), else none",
    "sep": "',' for csv, tab for tsv",
    "min_rating": "the dataset's; none for --data",
    "core": "the dataset's; 1 for --data",
    "split": "the dataset's; random for --data",
    "fractions": "0.72,0.08,0.2",
    "epochs": "100; 15 for hlr, hlr++, hlr-ease, hlr++-ease after their cml stage",
    "batch_size": "1000",
    "lr": "0.001; 0.0002 for hlr, hlr++, hlr-ease, hlr++-ease after their cml stage",
    "lr_gamma": "1.0 (no decay)",
    "clip_grad": "0 (off)",
    "margin": "0.5",
    "reduction": "mean",
    "loss": "softmax; hinge for transcf",
    "temperature": "0.35",
    "negatives": "500; 20 for adacml, hlr, hlr++, hlr-ease, hlr++-ease, lrml; 10 for hlr, hlr++, "
    "hlr-ease, hlr++-ease after their cml stage; 1 for bpr, transcf",
    "shared_negatives": "shared; per positive for adacml, bpr, hlr, hlr++, hlr-ease, hlr++-ease, "
    "lrml, transcf",
    "negative_sampling": "uniform",
    "negative_selection": "all",
    "rank_weight": "off",
    "shuffle": "epoch",
    "rotating_skip": "off",
    "select_by": "ndcg@10",
    "patience": "10; 5 for hlr, hlr++, hlr-ease, hlr++-ease after their cml stage",
    "freeze_embeddings": "off",
    "pretrain": "none; cml for hlr, hlr++, hlr-ease, hlr++-ease",
    "keep_start": "off; on for hlr, hlr++, hlr-ease, hlr++-ease after their cml stage",
    "history_dropout": "0 (off)",
    "relation_weight_decay": "0 (off)",
    "optimizer": "adam",
    "compile": "off",
    "deterministic": "on",
    "dim": "100",
    "n_slots": "20",
    "history_size": "50",
    "history_sampling": "random",
    "ks": "5,10,20",
    "cohorts": "0 (no cohorts)",
    "cohort_size": "10000",
    "max_users": "0 (every test user)",
    "memory_mib": "8",
    "device": "auto",
    "seed": "2021",
}
#: Values of the string options with a fixed set (checked against the library in the tests).
MODEL_NAMES = (
    "cml", "lrml", "hlr", "hlr++", "cml-ease", "hlr-ease", "hlr++-ease", "transcf", "adacml",
    "bpr", "als", "itemknn", "ease", "popularity",
)  # fmt: skip
DATA_FORMATS = ("csv", "tsv", "parquet", "movielens", "lightgcn", "citeulike", "hetrec", "diffnet")
SPLITS = ("random", "user_ratio", "leave_one_out", "temporal", "temporal_user", "given")
REDUCTIONS = ("mean", "sum")
LOSSES = ("hinge", "softmax")
OPTIMIZERS = ("adam", "lazy_adam")
NEGATIVE_SAMPLINGS = ("uniform", "popularity")
NEGATIVE_SELECTIONS = ("all", "closest")
SHUFFLES = ("epoch", "once")
HISTORY_SAMPLINGS = ("random", "unpop")
PRETRAINS = ("none", "cml")
HLRM_TYPES = {"base": "hlr", "plus": "hlr++"}
DEVICES = ("auto", "cpu", "cuda", "cuda:N")


def model_alias(value: str) -> bool:
    """Whether ``value`` is another name of a model (``pop``, ``hlrpp``); asked only for a
    name outside :data:`MODEL_NAMES`, so only then are the models (and torch) imported."""
    from hlrm.models.base import ALIASES

    return value.lower() in ALIASES or value.lower() in MODEL_NAMES


def is_device(value: str) -> bool:
    return value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())


def checked(choices: tuple[str, ...], also: Any = None) -> Any:
    """A typer callback refusing a value outside ``choices`` (or accepted by ``also``) with
    typer's usage error, before any work starts."""

    def check(value: str | None) -> str | None:
        if value is None or value in choices or (also is not None and also(value)):
            return value
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")

    return check


def with_default(help: str, default: str | None) -> str:
    """``help`` followed by the value used when the option is not given (rich markup is on in
    typer's help, so the bracket is escaped)."""
    return help if default is None else f"{help} \\[default: {default}]"


def choice(
    choices: tuple[str, ...], help: str, *names: str, default: str | None = None, **kwargs: Any
) -> Any:
    """A string option with a fixed set of values, listed in its help and checked on input."""
    return typer.Option(
        *names,
        help=with_default(f"{help} One of: {', '.join(choices)}.", default),
        callback=checked(choices, kwargs.pop("also", None)),
        show_default=False,
        **kwargs,
    )


def option(help: str, *names: str, default: str | None = None, **kwargs: Any) -> Any:
    """An option whose unset value (None) means "the default written in :data:`DEFAULTS`"."""
    return typer.Option(*names, help=with_default(help, default), show_default=False, **kwargs)


# Options shared by several commands.
DatasetOption = Annotated[str | None, typer.Option(help="A named dataset (hlrm datasets).")]
DataOption = Annotated[
    Path | None, typer.Option(help="Your own interaction file (or directory of split files).")
]
KsOption = Annotated[
    str | None, option("Cut-offs, e.g. 5,10,20.", "--k", "--topk", default=DEFAULTS["ks"])
]
CohortsOption = Annotated[
    int | None,
    option("Paper protocol: n cohorts of test users (0: all).", default=DEFAULTS["cohorts"]),
]
CohortSizeOption = Annotated[
    int | None, option("Users per cohort.", default=DEFAULTS["cohort_size"])
]
EvalSizeOption = Annotated[
    int | None,
    option("Evaluate a fixed-seed sample of n test users.", default=DEFAULTS["max_users"]),
]
DeviceOption = Annotated[
    str | None,
    choice(DEVICES, "Where to compute.", default=DEFAULTS["device"], also=is_device),
]
ScoreMemoryOption = Annotated[
    float | None,
    option(
        "MiB of the largest tensor scoring may build: speed, not results.",
        default=DEFAULTS["memory_mib"],
    ),
]
SeedOption = Annotated[
    int | None, option("Seed for split, sampling and init.", default=DEFAULTS["seed"])
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Only warnings and errors (as hlrm --quiet).")
]
AnnOption = Annotated[
    bool,
    typer.Option(
        help="Approximate retrieval: HNSW candidates by the CML distance, re-ranked by the exact "
        r'score (needs pip install "hlrm\[ann]"). Exact ranking is the default.'
    ),
]
AnnCandidatesOption = Annotated[
    int, typer.Option(help="With --ann: items per user scored exactly (more: closer to exact).")
]
# A run's own settings are the defaults when it is evaluated again.
RUN_DEFAULT = "the run's"

HEADLINE = ["ndcg@10", "recall@10", "precision@10", "hit@10", "map@10", "mrr@10"]


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``0.9,0.1,0`` → (0.9, 0.1, 0.0); the split checks the values themselves."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ConfigError(f"--fractions expects three numbers (train,valid,test), not {text!r}")
    return values


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"--k expects comma-separated integers such as 5,10,20, not {text!r}"
        ) from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--k expects positive integers, not {text!r}")
    return ks


def metrics_table(rows: dict[str, dict[str, Any]], keys: list[str], title: str) -> Table:
    table = Table(title=title)
    table.add_column("model")
    for key in keys:
        table.add_column(key, justify="right")
    for name, metrics in rows.items():
        cells = []
        for key in keys:
            value = metrics.get(key)
            std = metrics.get(f"{key}_std")
            text = "–" if value is None else f"{value:.4f}"
            cells.append(text if std is None else f"{text} ± {std:.4f}")
        table.add_row(name, *cells)
    return table


GRID_METRICS = [
    "ndcg", "recall", "precision", "hit", "map", "mrr",
    "paper_map", "paper_mrr", "local_ndcg", "coverage", "popularity",
]  # fmt: skip


def metric_grid(metrics: dict[str, Any], ks: list[int], title: str) -> Table:
    """Metrics as rows and cut-offs as columns, with ± std when cohorts were used."""
    table = Table(title=title)
    table.add_column("metric")
    for k in ks:
        table.add_column(f"@{k}", justify="right")
    for name in GRID_METRICS:
        if not any(f"{name}@{k}" in metrics for k in ks):
            continue
        cells = []
        for k in ks:
            value, std = metrics.get(f"{name}@{k}"), metrics.get(f"{name}@{k}_std")
            text = "–" if value is None else f"{value:.4f}"
            cells.append(text if std is None else f"{text} ± {std:.4f}")
        table.add_row(name, *cells)
    return table


# ---- quickstart ----------------------------------------------------------------------------------
@app.command()
def quickstart(
    epochs: Annotated[int, typer.Option(help="Training epochs of CML.")] = 15,
    device: DeviceOption = None,
    run_dir: Annotated[
        Path | None,
        option("Where to keep the CML run.", default="runs/quickstart, or -2, -3, ... if taken"),
    ] = None,
) -> None:
    """Train CML and popularity on built-in synthetic data (no download), keep the run.

    Prints both models' test metrics and the commands to try next on the kept CML run."""
    import shlex

    from hlrm.config import RunConfig
    from hlrm.data.pipeline import DataConfig, describe
    from hlrm.runs import train

    progress = Verbosity.progress()
    target = run_dir if run_dir is not None else unused_directory(Path("runs") / "quickstart")
    base = RunConfig(data=DataConfig(dataset="synthetic"))
    base.train.epochs = epochs
    base.train.device = device or "auto"
    base.train.lr = 2e-3
    base.eval.ks = [10]
    rows: dict[str, dict[str, Any]] = {}
    for name in ("popularity", "cml"):
        config = RunConfig.from_dict(base.to_dict())
        config.model.name = name
        logger.info(f"training {name}")
        run = train(config, target if name == "cml" else None, progress=progress)
        rows[name] = run.metrics or {}
    stats = describe(run.split)
    say(
        f"synthetic data: {stats['users']} users, {stats['items']} items, "
        f"{stats['interactions']} interactions (split 72/8/20, all test users, full ranking)"
    )
    console.print(metrics_table(rows, HEADLINE, "quickstart: test metrics"))
    lift = rows["cml"]["ndcg@10"] / max(rows["popularity"]["ndcg@10"], 1e-12)
    say(f"CML NDCG@10 is {lift:.1f}× popularity's.")
    where = shlex.quote(str(target))
    user = shlex.quote(str(run.split.user_ids[0]))
    say(f"\nThe CML run is saved in {target}. Next, try:")
    for command, why in (
        (f"hlrm evaluate {where} --k 5,10,20", "evaluate it again at other cut-offs"),
        (f"hlrm recommend {where} --user {user} --k 10", "top 10 unseen items for a user"),
        ("hlrm datasets", "real datasets, and how to get them"),
        ("hlrm train --model cml --data ratings.csv --run-dir runs/mine", "your own file"),
        ("hlrm train --help", "every option, with its default"),
    ):
        say(f"  {command:<64} # {why}")


def unused_directory(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that does not exist yet, so that a
    second quickstart never touches the first one's run."""
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


# ---- datasets ------------------------------------------------------------------------------------
@datasets_app.callback(invoke_without_command=True)
def datasets_list(ctx: typer.Context) -> None:
    """List the known datasets: size, licence, and whether they are available here."""
    if ctx.invoked_subcommand is not None:
        return
    from hlrm.data.registry import list_datasets

    table = Table(title="datasets (local directory: $HLRM_DATA_DIR, cache: $HLRM_CACHE_DIR)")
    for column in ("name", "interactions", "here", "licence"):
        table.add_column(column, justify="right" if column == "interactions" else "left")
    for row in list_datasets():
        licence = str(row["licence"]).split(":")[0]  # the full terms: hlrm datasets show NAME
        here = "yes" if row["available"] else "no"
        table.add_row(row["name"], f"{row['interactions']:,}", here, licence)
    console.print(table)
    console.print("Full terms, citation and statistics: hlrm datasets show NAME")


@datasets_app.command("show")
def datasets_show(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. ml-100k.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A dataset's licence, citation and statistics after its default preprocessing and split."""
    from hlrm.data.pipeline import DataConfig, describe, load_split
    from hlrm.data.registry import get_dataset

    spec = get_dataset(name)
    stats = describe(load_split(DataConfig(dataset=name).resolved()))
    if as_json:
        info = {"description": spec.description, "licence": spec.licence, "cite": spec.citation}
        typer.echo(json.dumps({**info, **stats}, indent=2, default=str))
        return
    console.print(f"[bold]{spec.name}[/bold]: {spec.description}")
    console.print(f"licence: {spec.licence}")
    console.print(f"cite: {spec.citation}")
    table = Table(title=f"{name} after preprocessing")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        table.add_row(key, f"{value:.6f}" if isinstance(value, float) else str(value))
    console.print(table)


# ---- train ---------------------------------------------------------------------------------------
def apply_overrides(config: RunConfig, **options: Any) -> RunConfig:
    """Put every option the user gave (not None) into its config section."""
    from hlrm.config import parse_value

    sections = {
        "data": (
            "dataset", "path", "format", "user_col", "item_col", "rating_col",
            "timestamp_col", "sep", "min_rating", "user_core", "item_core", "split",
        ),
        "train": (
            "epochs", "batch_size", "lr", "lr_gamma", "clip_grad", "margin", "reduction",
            "loss", "temperature", "negatives", "shared_negatives", "negative_sampling",
            "negative_selection", "rank_weight", "shuffle", "rotating_skip",
            "select_by",
            "patience", "freeze_embeddings", "device", "deterministic", "pretrain", "optimizer",
            "compile",
        ),
        "eval": ("cohorts", "cohort_size", "max_users", "memory_mib"),
    }  # fmt: skip
    for section, names in sections.items():
        for name in names:
            if options.get(name) is not None:
                setattr(getattr(config, section), name, options[name])
    if options.get("core") is not None:
        config.data.user_core = config.data.item_core = options["core"]
    if options.get("seed") is not None:
        config.seed = config.data.seed = options["seed"]
    if options.get("ks") is not None:
        config.eval.ks = parse_ks(options["ks"])
    if options.get("fractions") is not None:
        config.data.fractions = parse_fractions(options["fractions"])
    if options.get("final"):
        config.final = True
    if options.get("init_from") is not None:
        config.init_from = str(options["init_from"])
    if options.get("model") is not None:
        if options["model"] != config.model.name:
            config.model.params = {}
        config.model.name = options["model"]
    for name, value in options.get("model_params", {}).items():
        if value is not None:
            config.model.params[name] = value
    for item in options.get("params") or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param expects key=value, not {item!r}")
        config.model.params[key.strip().replace("-", "_")] = parse_value(value.strip())
    if config.data.dataset and config.data.path:
        if options.get("path") is not None:
            config.data.dataset = None
        else:
            config.data.path = None
    return config


@app.command("train")
def train_command(
    model: Annotated[
        str | None, choice(MODEL_NAMES, "The model.", default=DEFAULTS["model"], also=model_alias)
    ] = None,
    dataset: DatasetOption = None,
    data: DataOption = None,
    fmt: Annotated[
        str | None,
        choice(DATA_FORMATS, "Format of --data.", "--format", default=DEFAULTS["format"]),
    ] = None,
    user_col: Annotated[
        str | None, option("User column (csv/tsv/parquet).", default=DEFAULTS["user_col"])
    ] = None,
    item_col: Annotated[str | None, option("Item column.", default=DEFAULTS["item_col"])] = None,
    rating_col: Annotated[
        str | None, option("Rating or weight column.", default=DEFAULTS["rating_col"])
    ] = None,
    timestamp_col: Annotated[
        str | None, option("Timestamp column.", default=DEFAULTS["timestamp_col"])
    ] = None,
    sep: Annotated[
        str | None, option("Field separator of csv/tsv.", default=DEFAULTS["sep"])
    ] = None,
    min_rating: Annotated[
        float | None, option("Keep ratings >= this.", default=DEFAULTS["min_rating"])
    ] = None,
    core: Annotated[
        int | None, option("n-core for users and items.", default=DEFAULTS["core"])
    ] = None,
    user_core: Annotated[
        int | None, option("Minimum interactions per user.", default=DEFAULTS["core"])
    ] = None,
    item_core: Annotated[
        int | None, option("Minimum interactions per item.", default=DEFAULTS["core"])
    ] = None,
    split: Annotated[
        str | None, choice(SPLITS, "How to split the data.", default=DEFAULTS["split"])
    ] = None,
    fractions: Annotated[
        str | None,
        option(
            "train,valid,test shares, e.g. 0.9,0.1,0 (a zero test share: nothing is tested).",
            default=DEFAULTS["fractions"],
        ),
    ] = None,
    final: Annotated[
        bool,
        typer.Option(
            help="Fit for deployment: choose the epochs on a validation run (kept in "
            "<run-dir>/validation), then refit on every interaction for that many epochs."
        ),
    ] = False,
    epochs: Annotated[int | None, option("Training epochs.", default=DEFAULTS["epochs"])] = None,
    batch_size: Annotated[
        int | None, option("Pairs per batch.", default=DEFAULTS["batch_size"])
    ] = None,
    lr: Annotated[float | None, option("Adam learning rate.", default=DEFAULTS["lr"])] = None,
    lr_gamma: Annotated[
        float | None, option("Per-epoch lr decay factor.", default=DEFAULTS["lr_gamma"])
    ] = None,
    clip: Annotated[
        float | None, option("Gradient-norm clipping.", default=DEFAULTS["clip_grad"])
    ] = None,
    margin: Annotated[float | None, option("Hinge margin.", default=DEFAULTS["margin"])] = None,
    reduction: Annotated[
        str | None, choice(REDUCTIONS, "Loss reduction.", default=DEFAULTS["reduction"])
    ] = None,
    loss: Annotated[
        str | None,
        choice(LOSSES, "hinge (official) or softmax (sampled softmax).", default=DEFAULTS["loss"]),
    ] = None,
    temperature: Annotated[
        float | None,
        option("Softmax temperature on the distances.", default=DEFAULTS["temperature"]),
    ] = None,
    negatives: Annotated[
        int | None, option("Negatives per positive.", default=DEFAULTS["negatives"])
    ] = None,
    shared_negatives: Annotated[
        bool | None,
        option("One set of negatives per batch (one GEMM).", default=DEFAULTS["shared_negatives"]),
    ] = None,
    negative_sampling: Annotated[
        str | None,
        choice(
            NEGATIVE_SAMPLINGS,
            "How negatives are drawn (popularity: importance-weighted).",
            default=DEFAULTS["negative_sampling"],
        ),
    ] = None,
    negative_selection: Annotated[
        str | None,
        choice(
            NEGATIVE_SELECTIONS,
            "Which negatives count (closest: original CML).",
            default=DEFAULTS["negative_selection"],
        ),
    ] = None,
    rank_weight: Annotated[
        bool | None, option("Original CML's WARP rank weight.", default=DEFAULTS["rank_weight"])
    ] = None,
    shuffle: Annotated[
        str | None,
        choice(SHUFFLES, "Reshuffle every epoch or once (official).", default=DEFAULTS["shuffle"]),
    ] = None,
    rotating_skip: Annotated[
        bool | None,
        option("Parity: skip one rotating batch per epoch.", default=DEFAULTS["rotating_skip"]),
    ] = None,
    select_by: Annotated[
        str | None,
        option("valid_loss or a validation metric such as ndcg@10.", default=DEFAULTS["select_by"]),
    ] = None,
    patience: Annotated[
        int | None, option("Early-stopping patience (0: off).", default=DEFAULTS["patience"])
    ] = None,
    optimizer: Annotated[
        str | None,
        choice(
            OPTIMIZERS,
            "adam: dense (official); lazy_adam: only the table rows a batch uses move (faster; "
            "compiled for CML with the hinge loss when numba is installed).",
            default=DEFAULTS["optimizer"],
        ),
    ] = None,
    compile: Annotated[
        bool | None,
        option(
            "torch.compile the training loss (optimizer adam; about a minute to compile once).",
            default=DEFAULTS["compile"],
        ),
    ] = None,
    emb_size: Annotated[int | None, option("Embedding size d.", default=DEFAULTS["dim"])] = None,
    num_relations: Annotated[
        int | None, option("Memory slots N of LRML / HLR / HLR++.", default=DEFAULTS["n_slots"])
    ] = None,
    num_inter: Annotated[
        int | None,
        option("History pool size P of HLR / HLR++ / AdaCML.", default=DEFAULTS["history_size"]),
    ] = None,
    history_sampling: Annotated[
        str | None,
        choice(HISTORY_SAMPLINGS, "History sub-sampling.", default=DEFAULTS["history_sampling"]),
    ] = None,
    hlrm_type: Annotated[
        str | None,
        choice(tuple(HLRM_TYPES), "base (= --model hlr) or plus (= --model hlr++)."),
    ] = None,
    init_from: Annotated[
        Path | None, typer.Option(help="Warm-start embeddings from this run directory.")
    ] = None,
    freeze_embeddings: Annotated[
        bool | None,
        option("Keep warm-started embeddings fixed.", default=DEFAULTS["freeze_embeddings"]),
    ] = None,
    pretrain: Annotated[
        str | None,
        choice(
            PRETRAINS,
            "Train this model first (its default recipe) and start from its embeddings; none: "
            "random weights.",
            default=DEFAULTS["pretrain"],
        ),
    ] = None,
    deterministic: Annotated[
        bool | None,
        option(
            "Bit-identical runs for one seed at any thread count.",
            default=DEFAULTS["deterministic"],
        ),
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Any model option as key=value (repeatable).")
    ] = None,
    k: KsOption = None,
    cohorts: CohortsOption = None,
    cohort_size: CohortSizeOption = None,
    eval_size: EvalSizeOption = None,
    score_memory: ScoreMemoryOption = None,
    device: DeviceOption = None,
    seed: SeedOption = None,
    config: Annotated[Path | None, typer.Option(help="TOML configuration file.")] = None,
    run_dir: Annotated[
        Path | None, option("Where to write the run.", default="not written")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --run-dir.")] = False,
    tune_trials: Annotated[
        int,
        typer.Option(
            "--tune",
            help="First search the model's options with this many Optuna trials on the "
            "validation split (each a full training), then train the best; 0: the defaults.",
        ),
    ] = 0,
    quiet: QuietOption = False,
) -> None:
    """Train a model and evaluate it on the test split; options override --config."""
    from hlrm.config import RunConfig
    from hlrm.runs import train

    progress = Verbosity.progress(quiet)

    if hlrm_type is not None:
        if model is not None and model != HLRM_TYPES[hlrm_type]:
            raise ConfigError(f"--hlrm-type {hlrm_type} contradicts --model {model}")
        model = HLRM_TYPES[hlrm_type]
    if resume and run_dir is None:
        raise ConfigError("--resume needs --run-dir")
    if resume and config is None and (run_dir / "config.toml").is_file():
        config = run_dir / "config.toml"
    run_config = RunConfig.from_toml(config) if config else RunConfig()
    run_config = apply_overrides(
        run_config,
        model=model, dataset=dataset, path=None if data is None else str(data), format=fmt,
        user_col=user_col, item_col=item_col, rating_col=rating_col,
        timestamp_col=timestamp_col, sep=sep, min_rating=min_rating, core=core,
        user_core=user_core, item_core=item_core, split=split, fractions=fractions,
        final=final, epochs=epochs,
        batch_size=batch_size, lr=lr, lr_gamma=lr_gamma, clip_grad=clip, margin=margin,
        reduction=reduction, loss=loss, temperature=temperature, negatives=negatives,
        shared_negatives=shared_negatives, negative_sampling=negative_sampling,
        negative_selection=negative_selection,
        rank_weight=rank_weight, shuffle=shuffle, rotating_skip=rotating_skip,
        select_by=select_by, patience=patience, optimizer=optimizer, compile=compile,
        freeze_embeddings=freeze_embeddings, deterministic=deterministic, device=device,
        pretrain=pretrain,
        seed=seed, ks=k,
        cohorts=cohorts, cohort_size=cohort_size, max_users=eval_size, memory_mib=score_memory,
        init_from=init_from, params=param, model_params={
            "dim": emb_size, "n_slots": num_relations, "history_size": num_inter,
            "history_sampling": history_sampling,
        },
    )  # fmt: skip
    if not run_config.data.dataset and not run_config.data.path:
        raise ConfigError("say what to train on: --dataset NAME or --data FILE (or --config)")
    if tune_trials and several_processes():
        raise ConfigError(
            "--tune runs its trials in one process: run hlrm tune (or train --tune) without "
            "torchrun, then train the chosen configuration under torchrun"
        )
    if tune_trials:
        final = run_config.final  # the study's best configuration is an ordinary run's
        run_config = tuned_config(run_config, run_dir, tune_trials, progress)
        run_config.final = final
    if not join_processes(run_config.train.device):
        train(run_config, run_dir, resume=resume, progress=False, log=None)
        return
    logger.debug(f"configuration:\n{run_config.to_toml()}")
    run = train(run_config, run_dir, resume=resume, progress=progress, log=plain_log)
    tested = run.validation if run.config.final else run
    if tested is not None and tested.split.test.nnz:
        title = f"{run.model.name}: test metrics"
        if run.validation is not None:
            title += " of the validation run (the final model has no test split)"
        console.print(metric_grid(tested.metrics, run.config.eval.ks, title))
    elif not run.split.test.nnz and not run.config.final:
        say("no test share: nothing was evaluated")
    if run.config.final:
        fitted = f"{run.best_epoch} epochs" if run.model.trainable else "fitted in closed form"
        say(f"final model: every one of the {run.split.train.nnz} interactions, {fitted}")
    if run_dir is not None:
        say(f"run written to {run_dir}")


def tuned_config(config: RunConfig, run_dir: Path | None, trials: int, progress: bool) -> RunConfig:
    """``config`` with the options ``hlrm tune`` finds best in ``trials`` trials on the
    validation split; the study is kept in ``<run-dir>/tuning`` (resumable) or a temporary
    directory."""
    import tempfile

    from hlrm.config import RunConfig
    from hlrm.tuning import search_space, tune

    if trials < 0:
        raise ConfigError(f"--tune expects a number of trials >= 0, not {trials}")
    resolved = config.resolved()
    space = search_space(resolved.model.name, resolved.train.loss)
    if not space:
        raise ConfigError(f"--tune: model {resolved.model.name!r} has no options to tune")
    select_by = resolved.train.select_by
    metric = select_by if "@" in select_by else "ndcg@10"
    study = run_dir / "tuning" if run_dir is not None else Path(tempfile.mkdtemp(prefix="hlrm-"))
    grid = ", ".join(f"{key} {list(values)}" for key, values in space.items())
    plain_log(f"tuning {resolved.model.name}: {trials} trials over {grid} on validation {metric}")
    result = tune(resolved, study, trials=trials, metric=metric, progress=progress, log=plain_log)
    plain_log(
        f"best of {result.complete_trials} trials: {result.best_params} "
        f"(valid {metric} {result.best_value:.4f}); training it"
    )
    return RunConfig.from_toml(result.best_config)


# ---- evaluate ------------------------------------------------------------------------------------
@app.command("evaluate")
def evaluate_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by hlrm train.")],
    k: Annotated[
        str | None, option("Cut-offs, e.g. 5,10,20.", "--k", "--topk", default=RUN_DEFAULT)
    ] = None,
    cohorts: Annotated[
        int | None, option("Paper protocol: n cohorts of test users.", default=RUN_DEFAULT)
    ] = None,
    cohort_size: Annotated[int | None, option("Users per cohort.", default=RUN_DEFAULT)] = None,
    eval_size: Annotated[
        int | None,
        option("Evaluate a fixed-seed sample of n test users (0: all).", default=RUN_DEFAULT),
    ] = None,
    score_memory: Annotated[
        float | None,
        option(
            "MiB of the largest tensor scoring may build: speed, not results.", default=RUN_DEFAULT
        ),
    ] = None,
    device: DeviceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    allow_incomplete: Annotated[
        bool,
        typer.Option(
            "--allow-incomplete",
            help="Also evaluate a run whose training did not finish (its best checkpoint so far).",
        ),
    ] = False,
) -> None:
    """Re-evaluate a saved run on its test split."""
    from hlrm.runs import Run

    ks = parse_ks(k) if k else None
    device = device or "auto"
    prints = join_processes(device)
    run = Run.open(run_dir, device)
    if run.metrics is None:  # metrics.json is the last file a finished training writes
        if not allow_incomplete:
            raise HlrmError(
                f"{run_dir} is incomplete: its training did not finish (no metrics.json); "
                f"continue it with hlrm train --run-dir {run_dir} --resume, or evaluate its best "
                f"checkpoint so far with --allow-incomplete"
            )
        logger.warning(f"{run_dir} is incomplete: evaluating its best checkpoint so far")
    if cohort_size is not None:
        run.config.eval.cohort_size = cohort_size
    if score_memory is not None:
        run.config.eval.memory_mib = score_memory
        run.config.eval.validate()
    result = run.evaluate(ks, cohorts=cohorts, max_users=eval_size, device=device)
    if not prints:  # another rank of torchrun: rank 0 prints the metrics
        return
    if as_json:
        typer.echo(json.dumps({**result.metrics, "protocol": result.protocol}, indent=2))
        return
    title = f"{run.model.name} ({run_dir}): test metrics"
    console.print(metric_grid(result.metrics, ks or run.config.eval.ks, title))


# ---- recommend -----------------------------------------------------------------------------------
@app.command("recommend")
def recommend_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by hlrm train.")],
    user: Annotated[str | None, typer.Option(help="A known user's original id.")] = None,
    items: Annotated[
        str | None, typer.Option(help="A new user's items: comma-separated original ids.")
    ] = None,
    users: Annotated[
        str | None,
        typer.Option(
            help="Many users at once: 'all', or a file with one user id per line; needs --out."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="With --users: write user_id, rank, item_id, score (, title) rows to this "
            ".parquet or .csv file (replaced whole, never half-written)."
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", "--topk", help="How many items.")] = 10,
    explain: Annotated[
        bool, typer.Option(help="Show what led to each item (HLR, HLR++, AdaCML, LRML).")
    ] = False,
    ann: AnnOption = False,
    ann_candidates: AnnCandidatesOption = 100,
    device: DeviceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-k items a user does not have yet (nothing from train, validation or test), for a
    known user, a new user given by their items (fold-in), or every user into a file."""
    from dataclasses import asdict

    from hlrm.runs import Run, recommend

    if sum(option is not None for option in (user, items, users)) != 1:
        raise ConfigError("give one of --user ID, --items ID,ID,... or --users all|FILE")
    if (users is None) != (out is None):
        raise ConfigError("--users and --out go together: --users all --out recs.parquet")
    device = device or "auto"
    if users is not None:
        from hlrm.fileio import table_format

        if explain or as_json:
            raise ConfigError("--explain and --json apply to one user; --users writes --out")
        table_format(out)  # an unsupported suffix is refused before any work
        wanted = None if users == "all" else read_user_list(Path(users))
    run = Run.open(run_dir, device)
    index = None
    if ann:
        from hlrm.retrieval import AnnIndex

        index = AnnIndex.build(run.model, candidates=ann_candidates)
    if users is not None:
        write_batch(run, wanted, out, k, index)
        return
    given = None if items is None else [part.strip() for part in items.split(",") if part.strip()]
    recommendations = recommend(run, user=user, items=given, k=k, explain=explain, ann=index)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in recommendations], indent=2))
        return
    who = f"user {user}" if user is not None else f"a new user with {len(given or [])} items"
    table = Table(title=literal(f"{run.model.name}: top {len(recommendations)} for {who}"))
    for column in ("rank", "item", "title", "score"):
        table.add_column(column)
    if explain:
        table.add_column("because")
    for rec in recommendations:
        cells = [str(rec.rank), literal(rec.item_id), literal(rec.title or ""), f"{rec.score:.4f}"]
        if explain:
            cells.append(literal(explain_text(rec.explanation)))
        table.add_row(*cells)
    console.print(table)
    if explain and recommendations and recommendations[0].explanation is None:
        from hlrm.runs import EXPLAINED

        console.print(f"({run.model.name} has no explanation; {', '.join(EXPLAINED)} have one)")


def write_batch(
    run: Any, users: list[str] | None, out: Path, k: int, ann: Any | None = None
) -> None:
    """``recommend --users``: the top k of every user (``None``) or of ``users`` into one table
    file (:func:`hlrm.runs.recommend_table`)."""
    from hlrm.fileio import write_table
    from hlrm.runs import recommend_table

    table = recommend_table(run, users, k, ann=ann)
    write_table(out, table)
    count = run.split.n_users if users is None else len(users)
    plain_log(f"wrote {len(table)} recommendations for {count} users to {out}")


def read_user_list(path: Path) -> list[str]:
    """User ids, one per line; blank lines and lines starting with # are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--users: no file {path} (give 'all' or a file of user ids)") from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise ConfigError(f"--users: {path} is not a text file of user ids") from None
    ids = [line.strip() for line in text.splitlines()]
    ids = [line for line in ids if line and not line.startswith("#")]
    if not ids:
        raise ConfigError(f"--users: {path} lists no user id")
    return ids


def literal(text: str) -> Text:
    """Text from the user's data shown as it is: never parsed as rich markup (an id such as
    ``[/x]5`` or ``[bold]``), with control characters (ESC and the like) made visible instead
    of reaching the terminal."""
    return Text("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))


def explain_text(explanation: dict[str, list[dict[str, Any]]] | None) -> str:
    """One line per module, its three first entries with 4 significant digits: attention
    weights beside the module's uniform weight 1/n, each history item's effect on the score
    (and its share of all the pool's effects), LRML's related items with their similarity."""
    if not explanation:
        return ""
    lines = []
    for module, rows in explanation.items():
        if not rows:
            continue
        entries = []
        for row in rows[:3]:
            name = row.get("title") or row.get("item_id") or f"({row.get('slot')})"
            if module == "history_effect":
                entries.append(f"{name} {row['effect']:+.4g} ({row['share']:.1%})")
            elif module == "related":
                entries.append(f"{name} cos {row['similarity']:.4g}")
            else:
                entries.append(f"{name} {row['weight']:.4g}")
        head = module.replace("_", " ")
        if "uniform" in rows[0]:
            head += f" (uniform {rows[0]['uniform']:.4g})"
        elif module == "history_effect":
            head += " (score change without it)"
        lines.append(f"{head}: " + "; ".join(entries))
    return "\n".join(lines)


# ---- serve ---------------------------------------------------------------------------------------
def listening_socket(host: str, port: int) -> Any:
    """A listening TCP socket on ``host:port`` (port 0: a free one), or a one-line error. Bound
    here rather than by uvicorn, so a taken port is one line and ``--port 0`` can be reported."""
    import socket

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must lie in 0..65535, not {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # connections queue from now on, before the server loop runs
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("serve")
def serve_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by hlrm train.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback unless told otherwise).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8000,
    ann: AnnOption = False,
    ann_candidates: AnnCandidatesOption = 100,
    batching: Annotated[
        bool, typer.Option(help="Score concurrent GET /recommend requests in one call.")
    ] = True,
    max_batch: Annotated[int, typer.Option(help="Most requests in one scoring call.")] = 64,
    max_wait_ms: Annotated[
        float, typer.Option(help="Longest a request waits for others to join its batch.")
    ] = 2.0,
    device: DeviceOption = None,
) -> None:
    r"""Serve a trained run over HTTP: recommendations with explanations, similar items, item
    search and a web page (needs pip install "hlrm\[serve]")."""
    try:
        import uvicorn

        from hlrm.serving.app import Batching, create_app
    except ImportError:
        raise ConfigError(
            'hlrm serve needs FastAPI, uvicorn and swagger-ui-bundle: pip install "hlrm[serve]"'
        ) from None
    from hlrm.runs import Run

    if max_batch < 1 or max_wait_ms < 0:
        raise ConfigError("--max-batch must be >= 1 and --max-wait-ms >= 0")
    sock = listening_socket(host, port)
    try:
        run = Run.open(run_dir, device or "auto")
        index = None
        if ann:
            from hlrm.retrieval import AnnIndex

            index = AnnIndex.build(run.model, candidates=ann_candidates)
        web_app = create_app(run, ann=index, batching=Batching(batching, max_batch, max_wait_ms))
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        say(  # the command's result (stdout): where to find the server
            f"serving {run.model.name} ({run.split.name}) at http://{shown}:{bound[1]}/ "
            f"(API: /docs, /openapi.json; Ctrl-C stops)"
        )
        if not is_loopback(host):
            plain_log(f"note: listening on {host}, beyond this machine; the API has no login")
        server = uvicorn.Server(uvicorn.Config(web_app, log_level="warning", access_log=False))
        server.run(sockets=[sock])
    finally:
        sock.close()


# ---- export --------------------------------------------------------------------------------------
@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by hlrm train.")],
    out: Annotated[Path, typer.Option(help="The file (npz) or directory (parquet) to write.")],
    fmt: Annotated[str, typer.Option("--format", help="npz (one file) or parquet.")] = "npz",
) -> None:
    """Write a run's embeddings, relation memory, id maps and titles for use without hlrm
    (schema: docs/serving.md)."""
    from hlrm.export import FORMATS, export_run
    from hlrm.runs import Run

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    run = Run.open(run_dir, "cpu")
    path = export_run(run, fmt, out)
    plain_log(
        f"wrote {run.model.name} ({run.split.n_users} users, {run.split.n_items} items) to {path}"
    )


# ---- compare and tune ----------------------------------------------------------------------------
def plain_log(line: str) -> None:
    """A progress message (to stderr, through logging): the callback runs, compare and tune
    take as ``log``."""
    logger.info(line)


def say(line: str) -> None:
    """A line of the result (stdout): paths and brackets printed as they are, unwrapped."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers, not {text!r}") from None


@app.command("compare")
def compare_command(
    config: Annotated[
        Path | None,
        typer.Option(help="A comparison config (configs/compare/) or a protocol preset."),
    ] = None,
    models: Annotated[
        str | None,
        option("Comma-separated models, e.g. cml,lrml,hlr.", default="the config's"),
    ] = None,
    dataset: DatasetOption = None,
    data: DataOption = None,
    baseline: Annotated[
        str | None, option("Model the others are tested against.", default="the first")
    ] = None,
    seeds: Annotated[
        str | None,
        option("One run per seed, e.g. 1,2,3: mean ± std over seeds.", default="the seed"),
    ] = None,
    out: Annotated[
        Path | None, option("Report directory.", default="reports/<config name>")
    ] = None,
    epochs: Annotated[
        int | None, option("Training epochs of every model.", default=DEFAULTS["epochs"])
    ] = None,
    k: KsOption = None,
    cohorts: CohortsOption = None,
    cohort_size: CohortSizeOption = None,
    eval_size: EvalSizeOption = None,
    score_memory: ScoreMemoryOption = None,
    alpha: Annotated[
        float | None, option("Significance level after Holm correction.", default="0.05")
    ] = None,
    device: DeviceOption = None,
    plots: Annotated[bool, typer.Option(help="Write PNG plots (needs matplotlib).")] = True,
    quiet: QuietOption = False,
) -> None:
    """Train or reuse runs of several models under one protocol; write tables with significance
    tests, plots and the commands that rebuild them."""
    from hlrm.compare import CompareConfig, compare

    setup = CompareConfig.from_toml(config) if config else CompareConfig()
    setup.base = apply_overrides(
        setup.base, dataset=dataset, path=None if data is None else str(data), epochs=epochs,
        ks=k, cohorts=cohorts, cohort_size=cohort_size, max_users=eval_size,
        memory_mib=score_memory, device=device,
    )  # fmt: skip
    if models is not None:
        setup.models = [part.strip() for part in models.split(",") if part.strip()]
    if baseline is not None:
        setup.baseline = baseline
    if seeds is not None:
        setup.seeds = parse_seeds(seeds)
    if alpha is not None:
        setup.alpha = alpha
    out = out or Path("reports") / (config.stem if config else "compare")
    progress = Verbosity.progress(quiet)
    report = compare(setup, out, progress=progress, make_plots=plots, log=plain_log)
    ks = sorted(set(setup.base.eval.ks))
    main_k = 10 if 10 in ks else ks[-1]
    keys = [f"{name}@{main_k}" for name in ("ndcg", "recall", "precision", "hit", "map", "mrr")]
    keys = [key for key in keys if key in report.keys]
    table = Table(title=f"test metrics @{main_k} (baseline {setup.baseline_label})")
    table.add_column("model", no_wrap=True)
    for key in keys:
        table.add_column(key, justify="right")
    for label, row in report.summary.items():
        cells = []
        for key in keys:
            mean, std = row.get(key, (float("nan"), float("nan")))
            text = "–" if mean != mean else f"{mean:.4f}"
            text += "" if std != std else f" ± {std:.4f}"
            cells.append(text + report.marks(label, key))
        table.add_row(label, *cells)
    console.print(table)
    say(
        f"* Wilcoxon, † paired t-test: p < {setup.alpha:g} after Holm; ↑ above, ↓ below the "
        f"baseline. Report: {out}/table.md"
    )


@app.command("tune")
def tune_command(
    model: Annotated[
        str | None,
        option(
            f"Model to tune ({', '.join(MODEL_NAMES)}), or a label of the comparison --config.",
            default=DEFAULTS["model"],
        ),
    ] = None,
    dataset: DatasetOption = None,
    data: DataOption = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="Base TOML configuration the search starts from: a run configuration, or a "
            "comparison (configs/compare/) whose --model label is tuned under its protocol."
        ),
    ] = None,
    trials: Annotated[
        int, typer.Option(help="Complete trials the study should hold (it resumes).")
    ] = 50,
    metric: Annotated[str, typer.Option(help="Validation metric to maximise.")] = "ndcg@10",
    epochs: Annotated[
        int | None, option("Training epochs per trial.", default=DEFAULTS["epochs"])
    ] = None,
    device: DeviceOption = None,
    seed: SeedOption = None,
    run_dir: Annotated[
        Path | None, option("Study directory.", default="runs/tune-<model>-<dataset>")
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Search lr, margin, P, sampling and N with Optuna on the validation split; writes the best
    configuration as a TOML file for hlrm train --config."""
    from hlrm.compare import CompareConfig, read_toml
    from hlrm.config import RunConfig
    from hlrm.models.base import canonical_name
    from hlrm.tuning import tune

    raw = read_toml(config) if config is not None else {}
    if "compare" in raw:
        if model is None:
            raise ConfigError(f"{config} is a comparison: name the model to tune with --model")
        base, model = CompareConfig.from_dict(raw, str(config)).run_config(model), None
    else:
        base = RunConfig.from_toml(config) if config else RunConfig()
    base = apply_overrides(
        base, model=model, dataset=dataset, path=None if data is None else str(data),
        epochs=epochs, device=device, seed=seed,
    )  # fmt: skip
    if not base.data.dataset and not base.data.path:
        raise ConfigError("say what to tune on: --dataset NAME or --data FILE (or --config)")
    if run_dir is None:
        data_name = base.data.dataset or Path(str(base.data.path)).stem
        run_dir = Path("runs") / f"tune-{canonical_name(base.model.name)}-{data_name}"
    progress = Verbosity.progress(quiet)
    result = tune(base, run_dir, trials=trials, metric=metric, progress=progress, log=plain_log)
    say(
        f"best valid {result.metric} {result.best_value:.4f} over {result.complete_trials} "
        f"trials with {result.best_params}"
    )
    say(f"best configuration: {result.best_config} (hlrm train --config accepts it)")


def usage_error_types() -> tuple[type[Exception], ...]:
    """The exception classes typer raises for a mistyped command line.

    typer up to 0.2x raises click's ``ClickException``; newer releases vendor click as
    ``typer._click`` and install no click at all, so neither import may be assumed.
    """
    types: list[type[Exception]] = []
    for module_name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        types.append(module.ClickException)
    return tuple(types)


def usage_line(exc: Exception) -> str:
    """A usage error as one line: typer's message and where the help is (typer's own form is a
    boxed, multi-line panel)."""
    message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    context = getattr(exc, "ctx", None)
    if context is not None:
        names = []
        while context.parent is not None:  # the root's name depends on how hlrm was started
            names.append(context.info_name)
            context = context.parent
        message += f" (see {' '.join(['hlrm', *reversed(names)])} --help)"
    return message


def main() -> None:
    """The console script: one line and a non-zero exit for anything a user can get wrong."""
    usage_errors = usage_error_types()
    try:
        code = app(standalone_mode=False)
    except HlrmError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except MemoryError:
        typer.echo("error: out of memory; use a smaller model, batch or --score-memory", err=True)
        sys.exit(1)
    except usage_errors as exc:
        typer.echo(f"error: {usage_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    # Without standalone mode typer returns, rather than raises, the exit code of a
    # ``typer.Exit`` and of Ctrl-C (130); a command's own return value is never an int.
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        if code == 130:
            typer.echo("interrupted", err=True)
        sys.exit(code)
