"""PNG figures of a comparison: metric bars, NDCG@k over k, training curves.

matplotlib is an optional extra (``pip install 'hlrm[plots]'``): a comparison is still complete
without figures, so callers check :func:`available` and skip them with a notice. Figures are
drawn on ``matplotlib.figure.Figure`` objects (no pyplot, no global state, no display needed) and
written atomically.
"""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import Callable, Mapping, Sequence
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


def _colour(index: int) -> tuple[float, ...]:
    """A distinct colour for up to 20 series (tab20), then repeating."""
    from matplotlib import colormaps

    return colormaps["tab20"](index % 20)


def _figure(width: float, height: float, columns: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure whose layout makes room for every title, label and the suptitle (without it
    they overlapped on a comparison of one or two models)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def metric_bars(
    summary: Summary,
    k: int,
    path: Path,
    *,
    baseline: str | None = None,
    marks: Callable[[str, str], str] | None = None,
) -> None:
    """One panel per headline metric at cut-off ``k``: a horizontal bar per model (± std), the
    baseline's value as a dashed line. ``marks(label, key)`` gives a cell's significance marks
    (:meth:`hlrm.compare.Report.marks`): bars significantly above the baseline are green, below
    red, the baseline blue, the rest grey."""
    keys = [f"{name}@{k}" for name in BAR_METRICS]
    keys = [key for key in keys if any(key in row for row in summary.values())]
    labels = list(summary)
    width = 1.0 + 2.4 * len(keys)
    figure, axes = _figure(width, 1.6 + 0.28 * len(labels), columns=len(keys))
    y = np.arange(len(labels))
    for axis, key in zip(axes, keys, strict=True):
        values = [summary[label].get(key, (np.nan, np.nan)) for label in labels]
        means = np.array([v[0] for v in values], dtype=float)
        stds = np.array([v[1] for v in values], dtype=float)
        colours = [_bar_colour(label, key, baseline, marks) for label in labels]
        axis.barh(y, means, xerr=np.where(np.isnan(stds), 0.0, stds), color=colours, capsize=2)
        if baseline in summary and key in summary[baseline]:
            axis.axvline(summary[baseline][key][0], color="tab:blue", linestyle="--", lw=0.8)
        axis.set_title(key)
        axis.set_yticks(y, labels if axis is axes[0] else [""] * len(labels))
        axis.invert_yaxis()
        axis.grid(axis="x", alpha=0.3)
    title = f"test metrics @{k} (mean ± std)"
    if marks:
        legend = f"vs {baseline}: green above, red below (significant), grey not"
        title += "\n" + "\n".join(textwrap.wrap(legend, max(20, int(width * 10))))
    figure.suptitle(title)
    _save(figure, path)


def _bar_colour(
    label: str, key: str, baseline: str | None, marks: Callable[[str, str], str] | None
) -> str:
    if label == baseline:
        return "tab:blue"
    cell = marks(label, key) if marks is not None else ""
    return "tab:green" if cell.startswith("↑") else "tab:red" if cell.startswith("↓") else "0.6"


def ndcg_over_k(summary: Summary, ks: Sequence[int], path: Path) -> None:
    """NDCG@k against k for every model, with ± std as error bars."""
    figure, (axis,) = _figure(7.0, 4.5)
    for index, (label, row) in enumerate(summary.items()):
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
            color=_colour(index),
            label=label,
        )
    axis.set_xticks(list(ks))
    axis.set_xlabel("k")
    axis.set_ylabel("NDCG@k")
    axis.set_title("NDCG@k over k")
    axis.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
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

    figure, axes = _figure(12.0, 4.5, columns=2)
    for colour, (label, runs) in enumerate(curves.items()):
        for i, history in enumerate(runs):
            for axis, column in zip(axes, ("train_loss", "valid_loss"), strict=True):
                if column in history and history[column].notna().any():
                    axis.plot(
                        history["epoch"],
                        history[column],
                        color=_colour(colour),
                        alpha=1.0 if i == 0 else 0.5,
                        marker="." if len(history) < 30 else None,
                        label=label if i == 0 else None,
                    )
    for axis, title in zip(axes, ("training loss", "validation loss"), strict=True):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_title(title)
        low, high = axis.get_ylim()
        if low > 0 and high / low > 100:  # losses summed and averaged over batches side by side
            axis.set_yscale("log")
    legend_axis = next((axis for axis in axes if axis.get_legend_handles_labels()[0]), None)
    if legend_axis is not None:
        legend_axis.legend(fontsize="small", ncols=2)
    _save(figure, path)
    return True
