"""Comparison figures keep their titles apart, also for one or two models."""

from pathlib import Path

import pytest

from hlrm import plots

pytest.importorskip("matplotlib")


def drawn_figure(monkeypatch, draw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure))
    draw()
    (figure,) = figures
    FigureCanvasAgg(figure)
    figure.draw_without_rendering()
    return figure, figure.canvas.get_renderer()


@pytest.mark.parametrize("models", [["cml"], ["popularity", "cml"]])
def test_metric_bar_titles_do_not_overlap(monkeypatch, models):
    summary = {m: {f"{k}@10": (0.1 + i / 10, 0.01) for k in plots.BAR_METRICS}
               for i, m in enumerate(models)}  # fmt: skip

    def marks(label, key):
        return "↑*" if label == "cml" else ""

    figure, renderer = drawn_figure(
        monkeypatch,
        lambda: plots.metric_bars(summary, 10, Path("x.png"), baseline=models[0], marks=marks),
    )
    suptitle = figure._suptitle.get_window_extent(renderer)
    for axis in figure.axes:
        title = axis.title.get_window_extent(renderer)
        assert not suptitle.overlaps(title), axis.get_title()
        assert not suptitle.overlaps(axis.get_window_extent(renderer))
    titles = [axis.title.get_window_extent(renderer) for axis in figure.axes]
    for left, right in zip(titles, titles[1:], strict=False):
        assert not left.overlaps(right)
