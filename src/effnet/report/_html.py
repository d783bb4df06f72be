"""Writing the report as one self-contained HTML page: inline CSS, plots as data-URI SVG images, no scripts.

Every string that came from an input file (model names, layer names, paths, error messages) goes
through ``html.escape``. Each plot is its own SVG document inside an ``<img>``, so its ids cannot
collide with another plot's and nothing inside it can run. A Content-Security-Policy forbids every
network request and every script, so a viewer never fetches anything.
"""

from __future__ import annotations

import base64
import datetime
import html
from collections.abc import Iterable

from effnet import __version__
from effnet.report._data import ModelRow, ParetoView, ReportData, pareto_view
from effnet.report._plots import Plot, pareto_plot, prune_sensitivity_plot, quant_error_plot, training_curves

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0 auto;
       max-width: 1280px; padding: 16px 24px 48px; background: #fff; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta, figcaption, .note { color: #555; font-size: 13px; }
ul.inputs { padding-left: 20px; margin: 4px 0; }
code { font-size: 12px; background: #f3f3f3; padding: 1px 4px; border-radius: 3px; word-break: break-all; }
.problems { background: #fff8e1; border: 1px solid #e6d9a8; padding: 8px 16px; border-radius: 4px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { overflow-wrap: break-word; }
td code { overflow-wrap: anywhere; }
td.src { min-width: 12em; }
tr.failed td { color: #777; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; flex: 1 1 560px; min-width: 0; }
figure img { max-width: 100%; height: auto; display: block; }
"""

TABLE_COLUMNS = [
    ("#", "num"),
    ("model", "text"),
    ("variant", "text"),
    ("source", "text src"),
    ("params", "num"),
    ("FLOPs", "num"),
    ("size (MiB)", "num"),
    ("top-1 (%)", "num"),
    ("top-1 measured on", "text src"),
    ("latency (ms)", "num"),
    ("img/s", "num"),
    ("Pareto", "text"),
    ("note", "text"),
]


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape(str(value), quote=True)


def render_html(data: ReportData, title: str = "effnet report") -> str:
    """The whole page for ``data``: inputs, problems found, the model table, Pareto plots, curves, compression."""
    rows = data.rows()
    latency = pareto_view(rows, "latency_ms")
    size = pareto_view(rows, "size_mb")
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">Written by effnet {esc(__version__)} on {generated} from {len(data.inputs)} '
        f"input{'s' if len(data.inputs) != 1 else ''}.</p>",
        _inputs_section(data),
        _problems_section(data.warnings),
        _table_section(rows, latency, size),
        _pareto_section(rows, latency, size),
        _training_section(data),
        _compression_section(data),
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<link rel="icon" href="data:,">',
            f"<title>{esc(title)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            *[part for part in body if part],
            "</body>",
            "</html>",
            "",
        ]
    )


def _inputs_section(data: ReportData) -> str:
    items = []
    for path, kind in data.inputs:
        items.append(f"<li><code>{esc(path)}</code>: {esc(kind)}</li>")
    for bench in data.benches:
        b = bench.report
        machine = ", ".join(
            part
            for part in (
                b.device,
                b.cpu,
                f"{b.threads} threads" if b.threads is not None else "",
                f"torch {b.torch_version}" if b.torch_version else "",
            )
            if part
        )
        if machine:
            items.append(f"<li>bench <code>{esc(bench.source)}</code> measured on {esc(machine)}</li>")
    return f'<h2 id="inputs">Inputs</h2>\n<ul class="inputs">{"".join(items)}</ul>'


def _problems_section(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
    return f'<div class="problems"><strong>Problems found reading the inputs</strong><ul>{items}</ul></div>'


def _fmt(value: float | None, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    return "—" if value is None else f"{value / scale:,.{digits}f}{unit}"


def _table_section(rows: list[ModelRow], latency: ParetoView, size: ParetoView) -> str:
    if not rows:
        return '<h2 id="models">Models</h2>\n<p class="note">The inputs hold no models.</p>'
    head = "".join(f'<th class="{cls}">{esc(name)}</th>' for name, cls in TABLE_COLUMNS)
    on_latency, on_size = set(latency.frontier), set(size.frontier)
    lines = []
    for i, r in enumerate(rows):
        pareto = ", ".join(name for name, hit in (("latency", i in on_latency), ("size", i in on_size)) if hit)
        cells = [
            str(i + 1),
            esc(r.model),
            esc(r.variant),
            f"<code>{esc(r.source)}</code>",
            _fmt(r.params, 1e6, 2, " M"),
            _fmt(r.flops, 1e9, 3, " G"),
            _fmt(r.size_mb),
            _fmt(r.top1),
            f"<code>{esc(r.data)}</code>" if r.data else "",
            _fmt(r.latency_ms),
            _fmt(r.throughput_ips, digits=1),
            esc(pareto),
            esc(r.note),
        ]
        tds = "".join(f'<td class="{cls}">{cell}</td>' for cell, (_, cls) in zip(cells, TABLE_COLUMNS, strict=True))
        css_class = ' class="failed"' if r.note.startswith("failed") else ""
        lines.append(f'<tr id="row-{i + 1}" data-kind="{esc(r.kind)}"{css_class}>{tds}</tr>')
    return (
        '<h2 id="models">Models</h2>\n'
        '<p class="note">Top-1 is the best validation accuracy for a training run, the measured accuracy '
        'for bench results and compression passes; "top-1 measured on" names the images behind it, so only '
        'numbers measured on the same data compare. "Pareto" names the plots where a row is on the frontier.</p>\n'
        f'<table id="model-table"><thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(lines) + "\n</tbody></table>"
    )


def _row_list(indices: Iterable[int]) -> str:
    return ", ".join(f"#{i + 1}" for i in indices)


def _pareto_section(rows: list[ModelRow], latency: ParetoView, size: ParetoView) -> str:
    if not rows:
        return ""
    parts = []
    for view, what, x_label in (
        (latency, "latency", "latency (ms, median)"),
        (size, "size", "size (MiB)"),
    ):
        title = f"Top-1 accuracy vs {what}"
        plot = pareto_plot(rows, view, x_label, title)
        caption = (
            f"Frontier (no other row is both {'faster' if what == 'latency' else 'smaller'} and more accurate): "
            f"{_row_list(view.frontier)}."
            if view.frontier
            else ""
        )
        if view.left_out:
            caption += f" Not plotted, no top-1 or no {what}: {_row_list(view.left_out)}."
        if plot is None:
            parts.append(
                f'<figure class="empty" id="pareto-{what}"><p class="note">{esc(title)}: no row has both a top-1 '
                f"accuracy and a {what}, so there is nothing to plot.</p></figure>"
            )
        else:
            parts.append(_figure(plot, caption.strip(), f"pareto-{what}"))
    return '<h2 id="pareto">Accuracy vs cost</h2>\n<div class="plots">' + "\n".join(parts) + "</div>"


def _training_section(data: ReportData) -> str:
    if not data.runs:
        return ""
    parts = []
    for n, run in enumerate(data.runs, 1):
        plot = training_curves(run)
        if plot is None:
            parts.append(f'<p class="note">{esc(run.source)}: no metrics.jsonl, so no curves.</p>')
        else:
            parts.append(_figure(plot, plot.caption, f"training-{n}"))
    return '<h2 id="training">Training curves</h2>\n' + "\n".join(parts)


def _compression_section(data: ReportData) -> str:
    parts = []
    for n, found in enumerate(data.all_compressions(), 1):
        plots = [p for p in (quant_error_plot(found.report), prune_sensitivity_plot(found.report)) if p is not None]
        if plots:
            figures = "".join(_figure(p, p.caption, f"compression-{n}-{k}") for k, p in enumerate(plots, 1))
            parts.append(
                f'<h3>{esc(found.model)} <code>{esc(found.source)}</code></h3>\n<div class="plots">{figures}</div>'
            )
    if not parts:
        return ""
    return '<h2 id="compression">Quantization error and pruning sensitivity</h2>\n' + "\n".join(parts)


def _figure(plot: Plot, caption: str, anchor: str) -> str:
    uri = "data:image/svg+xml;base64," + base64.b64encode(plot.svg).decode("ascii")
    text = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure id="{esc(anchor)}"><img src="{uri}" alt="{esc(plot.title)}">{text}</figure>'
