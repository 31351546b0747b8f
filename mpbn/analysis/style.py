"""How the analysis figures look: one colour per run, readable sizes, legends off the data.

* **Colours.** :func:`run_colors` gives every run a colour once; a report computes it from all
  its runs and hands it to every figure, so a run keeps its colour in every panel of a figure
  and in every figure of a page. Grey is left out of the palette: it is the ANN's in the
  energy plot.
* **Sizes.** Figures are at most :data:`MAX_WIDTH` inches wide, saved at :data:`DPI`, so a page
  shows them at most about 1.4x reduced; fonts are 9-11 pt (:data:`STYLE`), so the smallest
  text is still about 11 px on screen at 100 % zoom.
* **Legends.** :func:`place_legend` puts a legend in the first corner of the axes where it
  covers no line, marker, band or bar; when none is free, in an upper corner above the data
  (the y range raised), and outside the axes (to the right) when the legend is too large.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

__all__ = ["STYLE", "DPI", "MAX_WIDTH", "PALETTE", "ANN_COLOR", "styled", "run_colors",
           "place_legend", "integer_ticks", "wrap"]

DPI = 120
LEGEND_WIDTH = 34  # characters per legend line
MAX_WIDTH = 10.0  # inches: 1200 px at DPI, shown at about 900 px in a markdown page

STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 11,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "lines.linewidth": 1.6,
}

#: tab10 without its grey (C7): run colours, in order.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf")
ANN_COLOR = "#7f7f7f"

_F = TypeVar("_F", bound=Callable[..., Any])


def styled(plot: _F) -> _F:
    """Run a plot function under :data:`STYLE` (font sizes are fixed when artists are made)."""
    @functools.wraps(plot)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        matplotlib.use("Agg", force=False)
        with matplotlib.rc_context(STYLE):
            return plot(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def run_colors(labels: Iterable[str], colors: dict[str, str] | None = None) -> dict[str, str]:
    """``{label: colour}``: the colours given in ``colors`` kept, the other labels the next
    palette colours in order (cycling after nine runs)."""
    out = dict(colors or {})
    used = len(out)
    for label in labels:
        if label not in out:
            out[label] = PALETTE[used % len(PALETTE)]
            used += 1
    return out


def wrap(text: str, width: int = 24) -> str:
    """``text`` broken into lines of at most ``width`` characters at spaces (tick labels and
    titles that carry long run labels)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=False)) or text


def integer_ticks(ax: Any, axis: str = "x") -> None:
    """Only integer ticks on ``axis`` (epochs, time steps)."""
    from matplotlib.ticker import MaxNLocator

    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))


_CORNERS = ("upper right", "upper left", "lower left", "lower right", "center right",
            "center left", "upper center", "lower center")


def _data_artists(ax: Any) -> list[Any]:
    """Lines, collections and patches drawn in data coordinates (reference lines such as
    ``axhline`` and spans, drawn partly in axes coordinates, may sit under a legend)."""
    artists = [*ax.lines, *ax.collections, *ax.patches]
    return [a for a in artists if a.get_visible()
            and a.get_transform().contains_branch(ax.transData)]


def _covers(artist: Any, box: Any, renderer: Any) -> bool:
    import numpy as np
    from matplotlib.collections import Collection
    from matplotlib.lines import Line2D
    from matplotlib.path import Path

    if isinstance(artist, Line2D):
        xy = artist.get_transform().transform(np.asarray(artist.get_xydata(), dtype=float))
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy) == 0:
            return False
        pad = artist.get_markersize() if artist.get_marker() not in (None, "None", "") else 0
        grown = box.padded(pad)
        inside = ((xy[:, 0] >= grown.x0) & (xy[:, 0] <= grown.x1)
                  & (xy[:, 1] >= grown.y0) & (xy[:, 1] <= grown.y1))
        if inside.any():
            return True
        return len(xy) > 1 and artist.get_linestyle() not in ("None", "", " ") and \
            Path(xy).intersects_bbox(box, filled=False)
    if isinstance(artist, Collection):
        transform = artist.get_transform()
        return any(transform.transform_path(p).intersects_bbox(box, filled=True)
                   for p in artist.get_paths())
    extent = artist.get_window_extent(renderer)
    return extent.width > 0 and extent.height > 0 and extent.overlaps(box)


def place_legend(ax: Any, handles: Sequence[Any] | None = None,
                 labels: Sequence[str] | None = None, *, also: Sequence[Any] = (),
                 **kwargs: Any) -> Any:
    """A legend where it hides no data, chosen automatically.

    In order: the first corner (or edge centre) of ``ax`` where the legend covers no line,
    marker, band or bar; else, when the legend is narrower than the axes and at most about
    40 % of their height, an upper corner after raising the top of the y range so the data
    stay below it; else outside the axes, to the right. Call it once everything is drawn
    (limits final). ``also``: twin axes whose data the legend must not cover either.

    Returns:
        The legend, or None when there is nothing to label.
    """
    if handles is None or labels is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    # Long run labels (with their config differences) on several lines: a legend narrower
    # than its axes fits a corner, or beside the axes without squeezing them away.
    labels = [wrap(label, LEGEND_WIDTH) for label in labels]
    fig = ax.figure
    artists = [a for axes in (ax, *also) for a in _data_artists(axes)]

    def first_free(locs: Sequence[str]) -> Any:
        fig.draw_without_rendering()  # lay the figure out: final axes sizes and limits
        renderer = fig.canvas.get_renderer()
        for loc in locs:
            legend = ax.legend(handles, labels, loc=loc, **kwargs)
            # A margin, since the axes may still shrink when another legend goes outside.
            box = legend.get_window_extent(renderer).padded(6)
            if not any(_covers(a, box, renderer) for a in artists):
                return legend
            legend.remove()
        return None

    legend = first_free(_CORNERS)
    if legend is not None:
        return legend
    renderer = fig.canvas.get_renderer()
    probe = ax.legend(handles, labels, loc="upper right", **kwargs)
    box, frame = probe.get_window_extent(renderer), ax.get_window_extent(renderer)
    probe.remove()
    height = box.height / max(frame.height, 1.0) + 0.04
    if box.width < 0.95 * frame.width and height < 0.42:
        _raise_top(ax, height)
        legend = first_free(("upper right", "upper left", "upper center"))
        if legend is not None:
            return legend
    return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                     borderaxespad=0.0, **kwargs)


def _raise_top(ax: Any, fraction: float) -> None:
    """Extend the y range upwards so the current range fills ``1 - fraction`` of the axes."""
    import math

    bottom, top = ax.get_ylim()
    if ax.get_yscale() == "log" and bottom > 0 and top > 0:
        lo, hi = math.log10(bottom), math.log10(top)
        ax.set_ylim(bottom, 10 ** (lo + (hi - lo) / (1.0 - fraction)))
    else:
        ax.set_ylim(bottom, bottom + (top - bottom) / (1.0 - fraction))
