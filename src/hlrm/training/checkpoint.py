"""Checkpoints: written atomically, loaded with ``weights_only=True`` (no arbitrary pickles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hlrm.errors import HlrmError
from hlrm.fileio import atomic_path


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise HlrmError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise HlrmError(f"cannot read checkpoint {path}: {exc}") from None
