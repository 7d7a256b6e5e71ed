"""Run configuration: one TOML file with ``seed`` and the sections ``[data]``, ``[model]``,
``[train]`` and ``[eval]``.

``[model]`` holds ``name`` plus that model's hyper-parameters. A run directory stores the resolved
configuration (every default filled in), so ``hlrm train --config run/config.toml`` repeats a run.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from hlrm.data.pipeline import DataConfig
from hlrm.errors import ConfigError
from hlrm.models.base import MODELS, canonical_name, checked_options, model_parameters
from hlrm.training.trainer import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


#: Model sizes that must be positive integers, with how the command line names them.
_SIZES = {
    "dim": "the embedding size (--emb-size)",
    "n_slots": "the number of memory slots (--num-relations)",
    "history_size": "the history pool size (--num-inter)",
}


@dataclass
class ModelConfig:
    name: str = "cml"
    params: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> ModelConfig:
        name = canonical_name(self.name)
        defaults = model_parameters(name)
        params = {**defaults, **checked_options(name, self.params)}
        # Sizes checked here, before any data is read (the model checks them again).
        for key, what in _SIZES.items():
            value = params.get(key)
            if key in defaults and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"{what} must be a positive integer, not {value!r}")
        return ModelConfig(name, params)


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    cohorts: int = 0  # 0: every test user; n: the paper's protocol with n cohorts
    cohort_size: int = 10_000
    max_users: int = 0  # 0: all; n: a fixed-seed sample of n test users
    memory_mib: float = 8.0  # largest tensor scoring may build; changes speed, never results

    def validate(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"cut-offs k must be positive integers, not {self.ks}")
        if self.cohorts < 0 or self.cohort_size < 1 or self.max_users < 0:
            raise ConfigError(
                "cohorts and the evaluated users must be >= 0 and the cohort size >= 1, not "
                f"cohorts={self.cohorts}, cohort_size={self.cohort_size}, "
                f"max_users={self.max_users}"
            )
        if not self.memory_mib > 0:
            raise ConfigError(f"the scoring memory budget must be positive, not {self.memory_mib}")


@dataclass
class RunConfig:
    seed: int = 2021
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: A trained run whose user and item embeddings initialise this model (warm start).
    init_from: str = ""
    #: Fit for deployment (``hlrm train --final``): a run on the split chooses the number of
    #: epochs on validation, then the model is refit on every interaction for that many epochs
    #: (:func:`hlrm.runs.train`).
    final: bool = False

    def resolved(self) -> RunConfig:
        """Every default filled in (the model's training recipe included) and checked."""
        if self.seed < 0 or self.data.seed < 0:
            raise ConfigError(f"the seed must be a non-negative integer, not {self.seed}")
        model = self.model.resolved()
        train = self.train
        if self.init_from and train.pretrain is None:  # an explicit starting point wins
            train = dataclasses.replace(train, pretrain="none")
        train = train.for_model(MODELS[model.name])
        train.validate()
        if train.pretrain != "none":
            if self.init_from:
                raise ConfigError(
                    f"init_from and pretrain = {train.pretrain!r} both give the starting point; "
                    f"set pretrain = 'none' to start from {self.init_from}"
                )
            if "memory_init" in model.params and "memory_init" not in self.model.params:
                # a zero memory starts the model exactly at its pretrained source
                model.params["memory_init"] = "zero"
        self.eval.validate()
        return dataclasses.replace(self, data=self.data.resolved(), model=model, train=train)

    def to_dict(self) -> dict[str, Any]:
        def clean(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items() if v is not None}
            if isinstance(obj, (list, tuple)):
                return [clean(v) for v in obj]
            return obj

        out: dict[str, Any] = {"seed": self.seed}
        if self.init_from:
            out["init_from"] = self.init_from
        if self.final:
            out["final"] = True
        out["data"] = clean(dataclasses.asdict(self.data))
        out["model"] = clean({"name": self.model.name, **self.model.params})
        out["train"] = clean(dataclasses.asdict(self.train))
        out["eval"] = clean(dataclasses.asdict(self.eval))
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "configuration") -> RunConfig:
        raw = dict(raw)
        known = {"seed", "init_from", "final", "data", "model", "train", "eval"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
        model = raw.pop("model", {})
        if not isinstance(model, dict):
            raise ConfigError(f"{source}: [model] must be a table, not {model!r}")
        model = dict(model)
        seed = raw.get("seed", 2021)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"{source}: seed must be a non-negative integer, not {seed!r}")
        final = raw.get("final", False)
        if not isinstance(final, bool):
            raise ConfigError(f"{source}: final must be true or false, not {final!r}")
        config = cls(
            seed=seed,
            init_from=str(raw.get("init_from", "")),
            final=final,
            data=_section(DataConfig, raw.get("data", {}), "data", source),
            model=ModelConfig(str(model.pop("name", "cml")), model),
            train=_section(TrainConfig, raw.get("train", {}), "train", source),
            eval=_section(EvalConfig, raw.get("eval", {}), "eval", source),
        )
        return config

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"{path} is a directory, not a TOML config file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not UTF-8 text, so not a TOML config file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        return cls.from_dict(raw, str(path))


#: The Python types a field's annotation admits (annotations are strings here).
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "None": (type(None),),
}


def _admits(annotation: str, value: Any) -> bool:
    """Whether ``value`` (as TOML parsed it) fits a dataclass field annotated ``annotation``;
    annotations this does not know (containers) admit anything of the right container type."""
    for part in (p.strip() for p in annotation.split("|")):
        if part.startswith(("list[", "tuple[")):
            if isinstance(value, (list, tuple)):
                return True
            continue
        kinds = _TYPES.get(part)
        if kinds is None:
            return True
        if isinstance(value, bool) and bool not in kinds:
            continue  # TOML true is not a number here
        if isinstance(value, kinds):
            return True
    return False


def _section(kind: type, values: dict[str, Any], name: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [{name}] must be a table, not {values!r}")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) in [{name}]: {', '.join(unknown)}")
    for key, value in values.items():
        annotation = str(fields[key].type)
        if not _admits(annotation, value):
            raise ConfigError(
                f"{source}: [{name}] {key} = {value!r} has the wrong type (expected {annotation})"
            )
    if isinstance(values.get("fractions"), list):  # TOML has arrays, the config holds a tuple
        values = {**values, "fractions": tuple(values["fractions"])}
    return kind(**values)


def parse_value(text: str) -> Any:
    """A command-line value as TOML would read it (``true``, ``0.5``, ``[1, 2]``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
