"""The report's plots, drawn with matplotlib and returned as standalone SVG documents.

matplotlib is imported on first use so that other ``effnet`` commands do not pay for it. Text is
written as glyph outlines (``svg.fonttype = path``), so the SVG needs no fonts from the viewer,
and ``$`` in user strings is escaped so a model name is never parsed as mathtext.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from effnet.errors import EffnetError
from effnet.report._data import ModelRow, ParetoView, TrainingRun
from effnet.schemas import CompressionReport

# The colours the browser test looks for in the screenshot; the page's CSS uses none of them.
KIND_STYLE = {
    "run": ("#1f77b4", "o", "training run"),
    "bench": ("#2ca02c", "s", "bench result"),
    "compression": ("#9467bd", "D", "compression pass"),
}
FRONTIER_COLOR = "#d62728"
MUTED_COLOR = "#b0b0b0"

_STYLE = {
    "svg.fonttype": "path",
    "svg.hashsalt": "effnet-report",  # the same inputs give the same SVG bytes
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.framealpha": 0.9,
}
_MAX_LABEL = 48


@dataclass(frozen=True)
class Plot:
    """One figure: its SVG document and the plain-text title and caption shown with it."""

    title: str
    svg: bytes
    caption: str = ""


@contextlib.contextmanager
def _style() -> Iterator[Any]:
    """matplotlib's ``Figure`` class with the report's style; no pyplot, so no global state or GUI backend."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise EffnetError("effnet report needs matplotlib to draw its plots: pip install matplotlib") from None
    with matplotlib.rc_context(_STYLE), warnings.catch_warnings():
        # A name with characters DejaVu Sans lacks draws boxes; that is not worth a warning per glyph.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        yield Figure


def _svg(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _label(text: str) -> str:
    """A user string fit for a title, tick or legend: shortened, literal, not hidden by legend's ``_`` rule."""
    text = text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"
    text = text.replace("$", r"\$")  # literal dollars; an unescaped pair would start mathtext
    return " " + text if text.startswith("_") else text


def _values(items: Sequence[Any], field: str) -> list[float]:
    return [math.nan if getattr(x, field) is None else getattr(x, field) for x in items]


def pareto_plot(rows: Sequence[ModelRow], view: ParetoView, x_label: str, title: str) -> Plot | None:
    """Top-1 against a cost, each point labelled with its table row number and the frontier drawn as a staircase."""
    if not view.plotted:
        return None
    with _style() as Figure:
        fig = Figure(figsize=(6.0, 4.2), layout="constrained")
        ax = fig.add_subplot()
        for kind, (color, marker, name) in KIND_STYLE.items():
            idx = [i for i in view.plotted if rows[i].kind == kind]
            if idx:
                xs = [getattr(rows[i], view.cost) for i in idx]
                ax.scatter(
                    xs,
                    [rows[i].top1 for i in idx],
                    c=color,
                    marker=marker,
                    s=36,
                    label=name,
                    zorder=3,
                    gid=f"points-{kind}",
                )
        fx = [getattr(rows[i], view.cost) for i in view.frontier]
        fy = [rows[i].top1 for i in view.frontier]
        ax.step(fx, fy, where="post", color=FRONTIER_COLOR, linewidth=1.6, zorder=2, label="Pareto frontier")
        ax.scatter(fx, fy, s=130, facecolors="none", edgecolors=FRONTIER_COLOR, linewidths=1.6, zorder=4)
        xs = [getattr(rows[i], view.cost) for i in view.plotted]
        if max(xs) / min(xs) > 20:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter("")
        ax.margins(0.12)
        ax.set_xlabel(x_label)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title)
        ax.legend(loc="best")  # placed clear of the points; the labels then avoid it
        _label_points(fig, ax, [(getattr(rows[i], view.cost), rows[i].top1) for i in view.plotted], view.plotted)
        return Plot(title=title, svg=_svg(fig))


# Where a label may go around its point, in marker radii: beside it first, then above and
# below, then further out (with a leader line) when the near places are taken.
_NEAR = [(1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1.4), (0, -1.4), (1.4, 0), (-1.4, 0)]
_PLACES = [(dx * r, dy * r) for r in (1.0, 2.2, 3.6) for dx, dy in _NEAR]
_MARKER_RADIUS_PT = 6.0  # the frontier ring (s=130) is about 11 pt across
_LABEL_SIZE = 7


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in display units (pixels, y up)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def overlap(self, other: Box) -> float:
        """The area shared with ``other`` (0 when they only touch or are apart)."""
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return w * h if w > 0 and h > 0 else 0.0

    def outside(self, bounds: Box) -> float:
        """The area of this box that lies outside ``bounds``."""
        return (self.x1 - self.x0) * (self.y1 - self.y0) - self.overlap(bounds)


def place_labels(
    anchors: Sequence[tuple[float, float]],
    sizes: Sequence[tuple[float, float]],
    radius: float,
    bounds: Box,
    obstacles: Sequence[Box] = (),
) -> list[tuple[float, float]]:
    """Offsets (in the anchors' units) that put each label's box next to its anchor without covering another.

    Greedy, in the given order: each label takes the first of :data:`_PLACES` (scaled by
    ``radius``) whose box overlaps no placed label, no anchor's marker (a square of side
    ``2 * radius``), no obstacle and stays inside ``bounds``; if none is free, the place
    with the least overlap. An offset is from the anchor to the nearest corner or edge
    midpoint of the label's box, so the box grows away from the point.

    >>> place_labels([(0, 0), (0, 0.5)], [(10, 4), (10, 4)], 1.0, Box(-50, -50, 50, 50))
    [(1.0, 1.0), (1.0, -1.0)]
    """
    markers = [Box(x - radius, y - radius, x + radius, y + radius) for x, y in anchors]
    placed: list[Box] = []
    offsets = []
    for (x, y), (w, h) in zip(anchors, sizes, strict=True):
        best: tuple[float, tuple[float, float], Box] | None = None
        for dx, dy in _PLACES:
            ox, oy = dx * radius, dy * radius
            box = _label_box(x + ox, y + oy, w, h, dx, dy)
            cost = box.outside(bounds) * 4 + sum(box.overlap(b) for b in (*placed, *markers, *obstacles))
            if best is None or cost < best[0]:
                best = (cost, (ox, oy), box)
            if cost == 0:
                break
        assert best is not None
        offsets.append(best[1])
        placed.append(best[2])
    return offsets


def _label_box(x: float, y: float, w: float, h: float, dx: float, dy: float) -> Box:
    """The box of a label whose nearest corner (or edge midpoint) to the anchor is at (x, y)."""
    x0 = x if dx > 0 else x - w if dx < 0 else x - w / 2
    y0 = y if dy > 0 else y - h if dy < 0 else y - h / 2
    return Box(x0, y0, x0 + w, y0 + h)


def _label_points(fig: Any, ax: Any, points: Sequence[tuple[float, float]], rows: Sequence[int]) -> None:
    """Label each point ``#n`` (its table row) where the label covers no other label, point or the legend.

    Points drawn on the same spot share one label (``#2, #5``). Positions are worked out in
    pixels once the layout is final; each label gets a white box so lines do not run through it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.font_manager import FontProperties

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # runs the constrained layout, so data-to-pixel transforms are final
    px_per_pt = fig.dpi / 72.0
    radius = _MARKER_RADIUS_PT * px_per_pt
    display = [tuple(ax.transData.transform(p)) for p in points]
    groups: list[tuple[tuple[float, float], list[int], list[tuple[float, float]]]] = []
    for (x, y), row, point in zip(display, rows, points, strict=True):
        for (gx, gy), members, _ in groups:
            if abs(gx - x) < 2 and abs(gy - y) < 2:
                members.append(row)
                break
        else:
            groups.append(((x, y), [row], [point]))
    texts = [", ".join(f"#{r + 1}" for r in members) for _, members, _ in groups]
    font = FontProperties(size=_LABEL_SIZE)
    pad = 2 * px_per_pt  # the white box's padding, both sides
    sizes = []
    for text in texts:
        w, h, _ = renderer.get_text_width_height_descent(text, font, ismath=False)
        sizes.append((w + pad, h + pad))
    frame = ax.get_window_extent(renderer)
    obstacles = []
    legend = ax.get_legend()
    if legend is not None:
        extent = legend.get_window_extent(renderer)
        obstacles.append(Box(extent.x0, extent.y0, extent.x1, extent.y1))
    offsets = place_labels(
        [g[0] for g in groups], sizes, radius, Box(frame.x0, frame.y0, frame.x1, frame.y1), obstacles
    )
    for n, (text, (ox, oy), (_, _, (point,))) in enumerate(zip(texts, offsets, groups, strict=True)):
        far = math.hypot(ox, oy) > 2 * radius
        annotation = ax.annotate(
            text,
            point,
            xytext=(ox / px_per_pt, oy / px_per_pt),
            textcoords="offset points",
            ha="left" if ox > 0 else "right" if ox < 0 else "center",
            va="bottom" if oy > 0 else "top" if oy < 0 else "center",
            fontsize=_LABEL_SIZE,
            zorder=5,
            gid=f"point-label-{n}",
            bbox={"boxstyle": "square,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
            arrowprops={"arrowstyle": "-", "color": "#666666", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 4}
            if far
            else None,
        )
        annotation.set_in_layout(False)  # the layout was fixed above; labels must not move the axes


def training_curves(run: TrainingRun) -> Plot | None:
    """Loss, accuracy and learning rate against epoch for one run; None when it has no epochs."""
    epochs = run.epochs
    if not epochs:
        return None
    x = [e.epoch for e in epochs]
    style = {"marker": "o", "markersize": 3} if len(epochs) <= 40 else {}
    panels = [
        ("loss", [("train", "train_loss"), ("validation", "val_loss")]),
        (
            "top-1 / top-5 accuracy (%)",
            [("train top-1", "train_top1"), ("val top-1", "val_top1"), ("val top-5", "val_top5")],
        ),
        ("learning rate", [("lr", "lr")]),
    ]
    title = f"Training: {run.model} ({run.source.name})"
    with _style() as Figure:
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(11.0, 3.2), layout="constrained")
        axes = fig.subplots(1, 3)
        for ax, (ylabel, series) in zip(axes, panels, strict=True):
            drawn = 0
            for name, field in series:
                ys = _values(epochs, field)
                if not all(math.isnan(y) for y in ys):
                    ax.plot(x, ys, label=name, **style)
                    drawn += 1
            if not drawn:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
            elif len(series) > 1:
                ax.legend()
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if x[-1] == x[0]:  # one epoch: matplotlib would span +-0.045 around it; show a whole epoch instead
                ax.set_xlim(x[0] - 0.5, x[0] + 0.5)
                ax.set_xticks([x[0]])
            ax.set_ylabel(ylabel)
        best_top1, best_epoch = run.best_top1
        if best_epoch is not None:
            axes[1].axvline(best_epoch, color="gray", linestyle=":", linewidth=1)
        axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        fig.suptitle(_label(title))
        caption = f"{len(epochs)} epoch" if len(epochs) == 1 else f"{len(epochs)} epochs"
        if best_top1 is not None:
            caption += f"; best validation top-1 {best_top1:.2f}% at epoch {best_epoch} (dotted line)"
        return Plot(title=title, svg=_svg(fig), caption=caption)


def quant_error_plot(report: CompressionReport) -> Plot | None:
    """SQNR and MSE per layer as horizontal bars, in network order (first layer on top)."""
    layers = report.quant_error
    if not layers:
        return None
    title = f"Quantization error per layer: {report.model}"
    names = [_label(q.layer) for q in layers]
    y = list(range(len(layers)))
    with _style() as Figure:
        fig = Figure(figsize=(7.0, max(2.4, 0.2 * len(layers) + 1.2)), layout="constrained")
        sqnr_ax, mse_ax = fig.subplots(1, 2, sharey=True)
        sqnr_ax.barh(y, [0.0 if math.isnan(v) else v for v in _values(layers, "sqnr_db")], color="#1f77b4")
        sqnr_ax.set_xlabel("SQNR (dB, higher is better)")
        mse = _values(layers, "mse")
        mse_ax.barh(y, [0.0 if math.isnan(v) else v for v in mse], color="#ff7f0e")
        known = [v for v in mse if not math.isnan(v)]
        if known and min(known) > 0 and max(known) / min(known) > 10:  # a log axis needs a decade to label
            mse_ax.set_xscale("log")
            mse_ax.xaxis.set_minor_formatter("")
        mse_ax.set_xlabel("MSE vs float output (lower is better)")
        sqnr_ax.set_yticks(y, names, fontsize=7)
        sqnr_ax.invert_yaxis()
        fig.suptitle(_label(title))
        scored = [q for q in layers if q.sqnr_db is not None]
        caption = f"{len(layers)} layers"
        if scored:
            worst = min(scored, key=lambda q: q.sqnr_db)
            caption += f"; lowest SQNR: {worst.layer} ({worst.sqnr_db:.1f} dB)"
        return Plot(title=title, svg=_svg(fig), caption=caption)


def prune_sensitivity_plot(report: CompressionReport, highlight: int = 8) -> Plot | None:
    """Top-1 against pruning ratio per layer; the ``highlight`` layers losing the most are coloured and named."""
    layers = report.prune_sensitivity
    if not layers:
        return None
    title = f"Pruning sensitivity per layer: {report.model}"
    ranked = sorted(layers, key=lambda s: s.drop, reverse=True)
    named = {id(s) for s in ranked[:highlight]}
    with _style() as Figure:
        fig = Figure(figsize=(7.0, 4.4), layout="constrained")
        ax = fig.add_subplot()
        for s in layers:
            order = sorted(range(len(s.ratios)), key=s.ratios.__getitem__)
            xs, ys = [s.ratios[k] for k in order], [s.top1[k] for k in order]
            if id(s) in named:
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.4, label=_label(s.layer), zorder=3)
            else:
                ax.plot(xs, ys, color=MUTED_COLOR, linewidth=0.8, zorder=2)
        ax.set_xlabel("fraction of channels pruned (this layer alone)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(_label(title))
        ax.legend(loc="lower left", fontsize=7)
        caption = f"{len(layers)} layers"
        if len(layers) > highlight:
            caption += f"; the {highlight} losing the most accuracy are coloured, the rest gray"
        caption += "; most sensitive: " + ", ".join(f"{s.layer} (-{s.drop:.1f} points)" for s in ranked[:3])
        return Plot(title=title, svg=_svg(fig), caption=caption)
