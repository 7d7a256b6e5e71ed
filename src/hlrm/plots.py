"""PNG figures of a comparison: metric bars, NDCG@k over k, training curves.

matplotlib is an optional extra (``pip install 'hlrm[plots]'``): a comparison is still complete
without figures, so callers check :func:`available` and skip them with a notice. Figures are
drawn on ``matplotlib.figure.Figure`` objects (no pyplot, no global state, no display needed) and
written atomically.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hlrm.fileio import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The metrics shown as bars, in this order, when the table has them.
BAR_METRICS = ("ndcg", "recall", "precision", "hit", "map", "mrr")

#: label → metric key → (mean, std or NaN).
Summary = Mapping[str, Mapping[str, tuple[float, float]]]


def available() -> bool:
    """Whether matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


def _save(figure: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def _figure(width: float, height: float, columns: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def metric_bars(summary: Summary, k: int, path: Path) -> None:
    """Grouped bars of the headline metrics at cut-off ``k``, one bar per model, with ± std."""
    keys = [f"{name}@{k}" for name in BAR_METRICS]
    keys = [key for key in keys if any(key in row for row in summary.values())]
    labels = list(summary)
    figure, (axis,) = _figure(max(6.0, 1.2 * len(keys) * max(1, len(labels)) / 3), 4.0)
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(keys))
    for i, label in enumerate(labels):
        values = [summary[label].get(key, (np.nan, np.nan)) for key in keys]
        means = np.array([v[0] for v in values], dtype=float)
        stds = np.array([v[1] for v in values], dtype=float)
        axis.bar(
            x + (i - (len(labels) - 1) / 2) * width,
            means,
            width,
            yerr=np.where(np.isnan(stds), 0.0, stds),
            capsize=3,
            label=label,
        )
    axis.set_xticks(x, keys)
    axis.set_ylabel("value (mean ± std)")
    axis.set_title(f"test metrics @{k}")
    axis.legend(fontsize="small")
    _save(figure, path)


def ndcg_over_k(summary: Summary, ks: Sequence[int], path: Path) -> None:
    """NDCG@k against k for every model, with ± std as error bars."""
    figure, (axis,) = _figure(6.0, 4.0)
    for label, row in summary.items():
        points = [(k, *row[f"ndcg@{k}"]) for k in ks if f"ndcg@{k}" in row]
        if not points:
            continue
        k_values, means, stds = (
            np.array(column, dtype=float) for column in zip(*points, strict=True)
        )
        axis.errorbar(
            k_values,
            means,
            yerr=np.where(np.isnan(stds), 0.0, stds),
            marker="o",
            capsize=3,
            label=label,
        )
    axis.set_xticks(list(ks))
    axis.set_xlabel("k")
    axis.set_ylabel("NDCG@k")
    axis.set_title("NDCG@k over k")
    axis.legend(fontsize="small")
    _save(figure, path)


def training_curves(histories: Mapping[str, Sequence[pd.DataFrame]], path: Path) -> bool:
    """Training and validation loss per epoch, one colour per model and one line per run (seed).

    Returns False, writing nothing, when no run has a history (untrained baselines only).
    """
    curves = {label: [h for h in runs if len(h)] for label, runs in histories.items()}
    curves = {label: runs for label, runs in curves.items() if runs}
    if not curves:
        return False
    from matplotlib.ticker import MaxNLocator

    figure, axes = _figure(11.0, 4.0, columns=2)
    for colour, (label, runs) in enumerate(curves.items()):
        for i, history in enumerate(runs):
            for axis, column in zip(axes, ("train_loss", "valid_loss"), strict=True):
                if column in history and history[column].notna().any():
                    axis.plot(
                        history["epoch"],
                        history[column],
                        color=f"C{colour}",
                        alpha=1.0 if i == 0 else 0.5,
                        marker="." if len(history) < 30 else None,
                        label=label if i == 0 else None,
                    )
    for axis, title in zip(axes, ("training loss", "validation loss"), strict=True):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_title(title)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    _save(figure, path)
    return True
