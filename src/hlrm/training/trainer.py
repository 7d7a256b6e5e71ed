"""One trainer for every model.

Per epoch: vectorised batches (see :mod:`hlrm.training.sampler`), an optimiser step, the model's
post-step constraint, then model selection on the validation split — by validation hinge loss as
the official code, or by any validation ranking metric such as ``ndcg@10`` — with optional early
stopping. Each epoch's randomness comes from a generator seeded with ``(seed, epoch)``, so resuming
from the last checkpoint replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from hlrm import distributed
from hlrm.data.matrix import SplitData
from hlrm.errors import ConfigError, TrainingError
from hlrm.evaluation.metrics import METRICS
from hlrm.evaluation.protocol import evaluate
from hlrm.models.base import Objective, Recommender, TrainBatch, pool_rows
from hlrm.models.hybrid import choose_blend
from hlrm.training import kernels
from hlrm.training.checkpoint import (
    MODEL_KEYS,
    RESUME_KEYS,
    first_line,
    load_checkpoint,
    model_state,
    save_checkpoint,
)
from hlrm.training.history import HistorySampler
from hlrm.training.losses import LOSSES, make_objective
from hlrm.training.optim import OPTIMIZERS, LazyAdam, clip_grad_norm_, make_optimizer
from hlrm.training.optim import make_adam as make_adam  # re-exported: its home until now
from hlrm.training.sampler import DISTRIBUTIONS, NegativeSampler, PairBatches

LOSS_SELECTION = "valid_loss"


#: The library's default training recipe (measured in docs/results.md): sampled softmax over many
#: negatives shared by the batch, selection on validation NDCG@10 with early stopping. A model's
#: ``train_recipe`` overrides these, and any value the user sets overrides both. The published
#: settings (hinge, one negative, validation loss) live in configs/hlr-paper/.
DEFAULT_RECIPE: dict[str, Any] = {
    "epochs": 100,
    "lr": 1e-3,
    "margin": 0.5,
    "loss": "softmax",
    "temperature": 0.35,
    "negatives": 500,
    "shared_negatives": True,
    "negative_sampling": "uniform",
    "select_by": "ndcg@10",
    "patience": 10,
    "pretrain": "none",
    "keep_start": False,
}

#: Options added after runs were first written, with the value that reproduces what a run
#: written before them did: a stored configuration without them means these (a report's old runs
#: are reused, not retrained, when nothing else differs).
INTRODUCED_LATER: dict[str, Any] = {"pretrain": "none", "keep_start": False}

#: What ``pretrain`` may name: "none", or a model trained first (with its own default recipe)
#: whose user and item embeddings start this one (:func:`hlrm.runs.train`).
PRETRAIN_MODELS = ("none", "cml")


@dataclass
class TrainConfig:
    """Training options. Those left at None take the model's recipe (:meth:`for_model`):
    :data:`DEFAULT_RECIPE` updated by the model class's ``train_recipe``."""

    epochs: int | None = None
    batch_size: int = 1000
    lr: float | None = None
    lr_gamma: float = 1.0  # per-epoch exponential learning-rate decay
    clip_grad: float = 0.0  # gradient-norm clipping; 0 disables it
    margin: float | None = None  # of the hinge loss
    reduction: str = "mean"
    loss: str | None = None  # "hinge" (official) or "softmax" (sampled softmax over -d / τ)
    temperature: float | None = None  # τ of the softmax loss
    negatives: int | None = None
    shared_negatives: bool | None = None  # one set of negatives per batch (one GEMM)
    negative_sampling: str | None = None  # "uniform", or "popularity" (∝ count^0.75, reweighted)
    negative_selection: str = "all"
    rank_weight: bool = False
    shuffle: str = "epoch"
    rotating_skip: bool = False  # parity: skip one rotating batch per epoch (needs shuffle="once")
    select_by: str | None = None  # "valid_loss" or a validation metric such as "ndcg@10"
    patience: int | None = None  # epochs without improvement before stopping; 0 never stops early
    freeze_embeddings: bool = False
    #: Regularisers of the relation part (history models / memory models); 0 disables them:
    #: dropout on history-pool entries while training, and an L2 penalty (Adam's weight decay)
    #: on every parameter other than the user and item tables (keys, memory, scales).
    history_dropout: float = 0.0
    relation_weight_decay: float = 0.0
    #: "adam": dense Adam (the official behaviour, every row moves every step); "lazy_adam":
    #: row-sparse gradients for the user and item tables, whose rows move only on the steps
    #: that use them (:mod:`hlrm.training.optim`; faster, a different optimiser).
    optimizer: str = "adam"
    #: Compile the training loss and its backward with ``torch.compile`` (inductor: fused C++
    #: loops on CPU, Triton on CUDA). Off by default: compiling takes about a minute on first use
    #: (cached on disk afterwards), results equal eager ones up to rounding only (same seed and
    #: thread count, same bits), and inductor cannot compile lazy_adam's row-sparse gradients.
    compile: bool = False
    #: "cml": train a CML first (its default recipe, same data and seed) and start from its
    #: embeddings, the HLR models' default; "none": start from random weights.
    pretrain: str | None = None
    #: Score the starting weights on validation as "epoch 0" and keep them unless an epoch beats
    #: them (a warm start is then never made worse); on for a pretrained HLR.
    keep_start: bool | None = None
    device: str = "auto"
    #: PyTorch's deterministic algorithms while training: with more than one thread the default
    #: kernels accumulate embedding gradients in a varying order, so two same-seed runs (or a
    #: resumed and an uninterrupted one) differ by rounding; these do not (docs/reliability.md).
    deterministic: bool = True

    def for_model(self, model: type[Recommender] | Recommender) -> TrainConfig:
        """This configuration with every unset option taken from ``model``'s recipe: the
        library's, the model's ``train_recipe`` on top, and its ``pretrained_recipe`` on top of
        both when the run starts from a pretrained model (``pretrain``)."""
        recipe = {**DEFAULT_RECIPE, **model.train_recipe}
        pretrain = recipe["pretrain"] if self.pretrain is None else self.pretrain
        if pretrain != "none":
            recipe.update(model.pretrained_recipe)
        unset = {key: value for key, value in recipe.items() if getattr(self, key) is None}
        return dataclasses.replace(self, **unset)

    def validate(self) -> None:
        unset = [key for key in DEFAULT_RECIPE if getattr(self, key) is None]
        if unset:
            raise ConfigError(f"training options not set: {', '.join(unset)} (use for_model)")
        if self.epochs < 1 or self.batch_size < 1 or self.negatives < 1:
            raise ConfigError("epochs, batch_size and negatives must be positive")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a positive number, not {self.lr}")
        if not math.isfinite(self.margin):
            raise ConfigError(f"margin must be a finite number, not {self.margin}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature must be a positive number, not {self.temperature}")
        if self.negative_sampling not in DISTRIBUTIONS:
            raise ConfigError(
                f"negative_sampling must be one of {DISTRIBUTIONS}, not {self.negative_sampling!r}"
            )
        device = self.device
        if device not in ("auto", "cpu") and not (
            device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())
        ):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], not {device!r}")
        if self.select_by != LOSS_SELECTION:
            name, _, k = self.select_by.partition("@")
            if name not in METRICS or not k.isdigit() or int(k) < 1:
                raise ConfigError(
                    f"select_by must be {LOSS_SELECTION!r} or a metric at a cut-off such as "
                    f"'ndcg@10' ({', '.join(METRICS)}), not {self.select_by!r}"
                )
        if self.patience < 0 or self.lr_gamma <= 0 or self.clip_grad < 0:
            raise ConfigError("patience and clip_grad must be >= 0 and lr_gamma > 0")
        if self.pretrain not in PRETRAIN_MODELS:
            raise ConfigError(f"pretrain must be one of {PRETRAIN_MODELS}, not {self.pretrain!r}")
        if not 0.0 <= self.history_dropout < 1.0:
            raise ConfigError(f"history_dropout must be in [0, 1), not {self.history_dropout}")
        if not (self.relation_weight_decay >= 0 and math.isfinite(self.relation_weight_decay)):
            raise ConfigError(
                f"relation_weight_decay must be >= 0 and finite, not {self.relation_weight_decay}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.compile and self.optimizer == "lazy_adam":
            raise ConfigError(
                "compile works with optimizer adam only (inductor cannot compile the row-sparse "
                "gradients of lazy_adam)"
            )
        if self.shuffle not in ("epoch", "once"):
            raise ConfigError(f"shuffle must be 'epoch' or 'once', not {self.shuffle!r}")
        if self.rotating_skip and self.shuffle != "once":
            raise ConfigError(
                "rotating_skip reproduces the official fixed order: use shuffle='once'"
            )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], not {name!r}")
    return torch.device(name)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    valid_loss: float
    valid_metric: float | None
    lr: float
    seconds: float
    best: bool


class Trainer:
    """Trains ``model`` on ``split.train``; checkpoints go to ``checkpoint_dir`` when given."""

    #: Train with the compiled step of :mod:`hlrm.training.kernels` where it applies (CML,
    #: hinge, ``lazy_adam``, Numba installed); False forces the PyTorch path it reproduces.
    use_compiled_steps: bool = True
    #: The ``torch.compile`` backend of ``TrainConfig.compile`` (tests use "eager": the same
    #: graph capture without code generation).
    compile_backend: str = "inductor"

    def __init__(
        self,
        model: Recommender,
        split: SplitData,
        config: TrainConfig,
        *,
        seed: int = 2021,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> None:
        config = config.for_model(model)
        config.validate()
        self.model = model
        self.split = split
        self.config = config
        self.seed = seed
        self.device = distributed.device_for(resolve_device(config.device))
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.progress = progress
        self.on_epoch = on_epoch
        self.history: list[EpochRecord] = []
        self._best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0  # stays 0 for models fitted without epochs
        #: The validation values of each blend weight tried after training (CML-EASE), and the
        #: one kept; None for other models.
        self.blend_values: dict[str, Any] | None = None
        model.to(self.device)
        model.prepare(split.train)
        if not model.trainable:
            return
        self.objective = make_objective(
            config.loss,
            margin=config.margin,
            temperature=config.temperature,
            reduction=config.reduction,
            negative_selection=config.negative_selection,
            rank_weight=config.rank_weight,
            n_items=split.n_items,
        )
        history_size = model.history_size if model.uses_history else 0
        train_history = (
            HistorySampler(split.train, history_size, model.history_sampling, self.device)
            if model.uses_history
            else None
        )
        self.train_batches = PairBatches(
            split.train,
            NegativeSampler(split.train, self.device, distribution=config.negative_sampling),
            batch_size=config.batch_size,
            n_negatives=config.negatives,
            shared=config.shared_negatives,
            history=train_history,
            history_dropout=config.history_dropout,
            shuffle=config.shuffle,
            rotating_skip=config.rotating_skip,
            seed=seed,
            device=self.device,
        )
        # Validation pairs: negatives avoid train ∪ valid, pools come from train items.
        self.valid_batches = (
            PairBatches(
                split.valid,
                NegativeSampler(split.train_valid, self.device),
                batch_size=config.batch_size,
                n_negatives=1,
                history=train_history,
                shuffle="once",
                seed=seed,
                device=self.device,
            )
            if split.valid.nnz
            else None
        )
        if self.valid_batches is None and (config.patience or config.select_by != LOSS_SELECTION):
            raise ConfigError("selection by a metric and early stopping need a validation split")
        if config.freeze_embeddings:
            for name in ("user_embeddings", "item_embeddings"):
                getattr(model, name).requires_grad_(False)
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ConfigError("nothing to train: every parameter is frozen")
        groups = [{"params": [p for _, p in named]}]
        if config.relation_weight_decay > 0:  # one group otherwise: the optimiser state as before
            tables = {"user_embeddings", "item_embeddings"}
            groups = [
                {"params": [p for name, p in named if name in tables]},
                {
                    "params": [p for name, p in named if name not in tables],
                    "weight_decay": config.relation_weight_decay,
                },
            ]
        if config.optimizer == "lazy_adam" and distributed.world_size() > 1:
            raise ConfigError("optimizer lazy_adam does not run under torchrun yet: use adam")
        model.sparse_gradients = config.optimizer == "lazy_adam"
        groups = [g for g in groups if g["params"]]
        self.optimizer = make_optimizer(config.optimizer, groups, config.lr)
        self._parameter_names = {p: name for name, p in named}
        self._compiled = (
            kernels.FusedCMLStep(model, self.optimizer, self.objective)
            if self.use_compiled_steps and kernels.supports(model, config, self.objective) is None
            else None
        )
        # Under torchrun: each rank trains on its rows of every global batch (hlrm.distributed).
        self.world = distributed.world_size()
        self._step_loss: torch.nn.Module = BatchLoss(model, self.objective)
        if self.world > 1:
            if config.compile:
                raise ConfigError("compile does not run under torchrun yet: leave it off")
            self._step_loss = distributed.data_parallel(self._step_loss, self.device)
        # compile: the graph of the first full batch; other shapes (the epoch's last, partial
        # batch; narrower history pools) run eagerly rather than trigger a recompilation
        self._compiled_loss = (
            torch.compile(self._step_loss, dynamic=False, backend=self.compile_backend)
            if config.compile
            else None
        )
        self._compiled_shapes: tuple | None = None
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, config.lr_gamma)
        self.start_epoch = 1
        self.best_value = math.inf
        self.stale_epochs = 0

    # ---- checkpoints -------------------------------------------------------------------------
    def _path(self, name: str) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / name

    def _model_state(self) -> dict[str, Any]:
        return model_state(self.model)

    def _save_last(self, epoch: int) -> None:
        path = self._path("last.pt")
        if path is None or not distributed.is_main():
            return
        state = self._model_state()
        state.update(
            epoch=epoch,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            best_value=self.best_value,
            best_epoch=self.best_epoch,
            stale_epochs=self.stale_epochs,
            history=[vars(r) for r in self.history],
        )
        save_checkpoint(path, state)

    def save_best(self) -> None:
        path = self._path("best.pt")
        if path is None:
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        elif distributed.is_main():
            save_checkpoint(path, self._model_state())

    def resume(self) -> None:
        """Continue from ``last.pt`` in the checkpoint directory."""
        path = self._path("last.pt")
        if path is None or not path.is_file():
            raise TrainingError(f"nothing to resume: {path} does not exist")
        state = load_checkpoint(path, self.device, MODEL_KEYS + RESUME_KEYS)
        if state["model"] != self.model.name:
            raise TrainingError(f"{path} holds a {state['model']!r} model, not {self.model.name!r}")
        try:
            self.model.load_state_dict(state["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            history = [EpochRecord(**r) for r in state.get("history", [])]
            start_epoch = int(state["epoch"]) + 1
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise TrainingError(
                f"{path} does not belong to this run's model and data ({first_line(exc)})"
            ) from None
        self.best_value = state["best_value"]
        self.best_epoch = state["best_epoch"]
        self.stale_epochs = state["stale_epochs"]
        self.history = history
        self.start_epoch = start_epoch

    # ---- training ----------------------------------------------------------------------------
    def _train_epoch(self, epoch: int, bar: tqdm | None) -> float:
        self.model.train()
        generator = epoch_generator(self.seed, epoch, self.device)
        total, count = 0.0, 0
        for step, batch in enumerate(self.train_batches.epoch(generator, epoch), start=1):
            loss = self.train_step(batch)
            if not math.isfinite(loss):
                raise TrainingError(
                    f"the training loss became {loss} at epoch {epoch}, batch {step}; "
                    "lower the learning rate or enable --clip; no checkpoint was written for it"
                )
            total += loss / self.world  # this rank's part of the batch's loss
            count += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total * self.world / count:.4f}", refresh=False)
        return distributed.all_sum_float(total) / count

    def _share(self, batch: TrainBatch) -> tuple[TrainBatch, float]:
        """This rank's contiguous rows of a global batch, and the factor that makes the
        average DDP takes over the ranks equal to the loss of the whole batch: a mean over
        the rows weighs each rank's mean by its share of them, a sum counts every row once."""
        if self.world == 1:
            return batch, 1.0
        size = len(batch.users)
        rows = distributed.shard(size)
        local = TrainBatch(
            batch.users[rows],
            batch.positives[rows],
            batch.negatives[rows],
            pool_rows(batch.history, rows),
            batch.shared,
            None if batch.negative_log_weights is None else batch.negative_log_weights[rows],
        )
        if self.config.reduction == "sum":
            return local, float(self.world)
        return local, (rows.stop - rows.start) * self.world / size

    def train_step(self, batch: TrainBatch) -> float:
        """One optimiser step on ``batch`` (loss, gradients, update, post-step constraint);
        returns the batch's loss (under torchrun: this rank's weighted part of it). A non-finite
        loss leaves the weights as they were, except on the compiled path, where the caller's
        error stops the run before anything is saved."""
        if self._compiled is not None:
            terms, count = self._compiled(batch.users, batch.positives, batch.negatives)
            return terms / count if self.config.reduction == "mean" else terms
        loss = self._loss_function(batch)(*self._share(batch))
        if not torch.isfinite(loss):
            return loss.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_grad > 0:
            clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        self.optimizer.step()
        self.model.after_step(self._moved_rows())
        return loss.item()

    def _loss_function(self, batch: TrainBatch) -> torch.nn.Module:
        """The compiled loss for batches shaped like the first one it saw, else the eager one."""
        if self._compiled_loss is None:
            return self._step_loss
        shapes = (
            tuple(batch.users.shape),
            tuple(batch.negatives.shape),
            None if batch.history is None else tuple(batch.history.items.shape),
            batch.negative_log_weights is None,
        )
        if self._compiled_shapes is None:
            self._compiled_shapes = shapes
        return self._compiled_loss if shapes == self._compiled_shapes else self._step_loss

    def _moved_rows(self) -> dict[str, Tensor] | None:
        """For a row-sparse step, the rows it moved per parameter name, so that the post-step
        projection looks only at those; None (everything) after the run's first step, which
        projects every row as dense Adam's first step does (initial rows may lie outside the
        ball), and for dense optimisers."""
        optimizer = self.optimizer
        if not isinstance(optimizer, LazyAdam) or not optimizer.touched:
            return None
        first = next(iter(optimizer.touched))
        if float(optimizer.state[first]["step"]) <= 1:
            return None
        return {self._parameter_names[p]: rows for p, rows in optimizer.touched.items()}

    @torch.no_grad()
    def validation_loss(self) -> float:
        if self.valid_batches is None:
            return math.nan
        self.model.eval()
        generator = epoch_generator(self.seed, 0, self.device)
        total, count = 0.0, 0
        for batch in self.valid_batches.epoch(generator):
            total += self.model.loss(batch, self.objective).item()
            count += 1
        return total / count

    def _selection_value(self, valid_loss: float) -> tuple[float, float | None]:
        """Lower is better: the validation loss, or minus the validation metric."""
        if self.config.select_by == LOSS_SELECTION:
            return valid_loss, None
        k = int(self.config.select_by.split("@")[1])
        result = evaluate(self.model, self.split, ks=(k,), target="valid", device=self.device)
        if self.config.select_by not in result.metrics:
            raise ConfigError(f"unknown validation metric {self.config.select_by!r}")
        metric = result.metrics[self.config.select_by]
        return -metric, metric

    def fit(self) -> list[EpochRecord]:
        if not self.model.trainable:
            self.save_best()
            return self.history
        config = self.config
        epochs = range(self.start_epoch, config.epochs + 1)
        bar = (
            tqdm(
                total=sum(len(self.train_batches.batch_numbers(e)) for e in epochs),
                unit="batch",
                dynamic_ncols=True,
            )
            if self.progress and len(epochs)
            else None
        )
        previous = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        # warn_only: an op without a deterministic kernel (some CUDA ones) warns instead of failing
        torch.use_deterministic_algorithms(config.deterministic, warn_only=True)
        try:
            if config.keep_start and not self.history and self.valid_batches is not None:
                self._score_start()
            for epoch in epochs:
                if bar is not None:
                    bar.set_description(f"epoch {epoch}/{config.epochs}")
                started = time.perf_counter()
                train_loss = self._train_epoch(epoch, bar)
                valid_loss = self.validation_loss()
                value, metric = self._selection_value(valid_loss)
                value = distributed.from_main(value)  # every rank keeps and stops alike
                # Without a validation split the latest epoch is the one kept.
                improved = (
                    self.valid_batches is None
                    or math.isinf(self.best_value)
                    or value < self.best_value
                )
                lr = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
                if improved:
                    self.best_value, self.best_epoch, self.stale_epochs = value, epoch, 0
                    self.save_best()
                else:
                    self.stale_epochs += 1
                record = EpochRecord(
                    epoch,
                    train_loss,
                    valid_loss,
                    metric,
                    lr,
                    time.perf_counter() - started,
                    improved,
                )
                self.history.append(record)
                if bar is not None:
                    shown = {"loss": f"{train_loss:.4f}", "valid_loss": f"{valid_loss:.4f}"}
                    if metric is not None:
                        shown[config.select_by] = f"{metric:.4f}"
                    bar.set_postfix(shown)
                self._save_last(epoch)
                if self.on_epoch is not None:
                    self.on_epoch(record)
                if config.patience and self.stale_epochs >= config.patience:
                    break
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
            if bar is not None:
                bar.close()
        self._choose_blend()
        return self.history

    def _choose_blend(self) -> None:
        """Models whose score adds a term weighted after training (``blend_grid``, CML-EASE):
        the kept epoch gets the weight that scores best on validation (the selection metric;
        NDCG@10 when epochs are selected by loss), searched by
        :func:`~hlrm.models.hybrid.choose_blend`, and the best checkpoint is saved with it. Without
        a validation split the weight stays as it is."""
        grid = getattr(self.model, "blend_grid", ())
        if not grid or self.valid_batches is None:
            return
        metric = "ndcg@10" if self.config.select_by == LOSS_SELECTION else self.config.select_by
        k = int(metric.split("@")[1])
        self.load_best()

        def value_of(weight: float) -> float:
            self.model.set_blend(weight)
            result = evaluate(self.model, self.split, ks=(k,), target="valid", device=self.device)
            return result.metrics[metric]

        chosen, values = choose_blend(grid, value_of)
        self.model.set_blend(chosen)
        self.blend_values = {"metric": metric, "chosen": chosen, "validation": values}
        self.save_best()

    def _score_start(self) -> None:
        """Epoch 0: the weights training starts from, scored on validation and kept as the best
        so far (``keep_start``)."""
        started = time.perf_counter()
        valid_loss = self.validation_loss()
        value, metric = self._selection_value(valid_loss)
        self.best_value = distributed.from_main(value)
        self.best_epoch = 0
        self.save_best()
        lr = self.optimizer.param_groups[0]["lr"]
        record = EpochRecord(
            0, math.nan, valid_loss, metric, lr, time.perf_counter() - started, True
        )
        self.history.append(record)
        self._save_last(0)
        if self.on_epoch is not None:
            self.on_epoch(record)

    def load_best(self) -> None:
        """Restore the best epoch's weights (in memory if no checkpoint directory)."""
        path = self._path("best.pt")
        distributed.barrier()  # rank 0 has written the best epoch's weights
        if path is None:
            if self._best_state is not None:
                self.model.load_state_dict(self._best_state)
        elif path.is_file():
            self.model.load_state_dict(load_checkpoint(path, self.device)["state_dict"])


class BatchLoss(torch.nn.Module):
    """A model's loss on a batch, times a weight, as a module's ``forward``: what
    ``DistributedDataParallel`` wraps (it averages the gradients of what its forward returns).
    A rank whose share of a batch is empty still takes part, with a zero loss."""

    def __init__(self, model: Recommender, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: TrainBatch, weight: float = 1.0) -> torch.Tensor:
        if len(batch.users) == 0:
            return sum(p.sum() * 0.0 for p in self.model.parameters() if p.requires_grad)
        loss = self.model.loss(batch, self.objective)
        return loss if weight == 1.0 else loss * weight
