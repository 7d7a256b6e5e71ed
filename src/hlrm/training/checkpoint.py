"""Checkpoints: written atomically, loaded with ``weights_only=True`` (no arbitrary pickles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hlrm.errors import HlrmError
from hlrm.fileio import atomic_path


def model_state(model: Any) -> dict[str, Any]:
    """What rebuilds a model (:func:`hlrm.runs.model_from_checkpoint`): its registered name,
    hyper-parameters, sizes and weights."""
    return {
        "model": model.name,
        "hparams": model.hparams,
        "n_users": model.n_users,
        "n_items": model.n_items,
        "state_dict": model.state_dict(),
    }


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


#: What every hlrm checkpoint holds (``best.pt`` and ``last.pt``); ``last.pt`` adds
#: :data:`RESUME_KEYS`.
MODEL_KEYS = ("model", "n_users", "n_items", "hparams", "state_dict")
RESUME_KEYS = ("optimizer", "scheduler", "epoch", "best_value", "best_epoch", "stale_epochs")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message as one short line (PyTorch's load errors run to paragraphs)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", required: tuple[str, ...] = MODEL_KEYS
) -> dict[str, Any]:
    """The checkpoint at ``path``, checked to hold the ``required`` entries: a truncated,
    foreign or hand-made file is one :class:`HlrmError` naming it, never a ``KeyError``."""
    path = Path(path)
    if not path.is_file():
        raise HlrmError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise HlrmError(
            f"cannot read checkpoint {path} (damaged, or not an hlrm checkpoint: {first_line(exc)})"
        ) from None
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise HlrmError(f"{path} is not an hlrm checkpoint (it has no {', '.join(missing)})")
    return state
