"""The HTML page: its table, Pareto frontiers, plots, escaping, self-containment, and where it may be written."""

import base64
import json
import warnings
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from tests.report.factories import (
    NASTY_DIR,
    NASTY_LAYER,
    NASTY_MODEL,
    bench_result,
    epoch_record,
    write_bench,
    write_run,
)

from effnet.errors import EffnetError
from effnet.report import ReportWarning, build_report, check_output, load_inputs, write_report
from effnet.report._plots import prune_sensitivity_plot
from effnet.schemas import CompressionReport, PruneSensitivity


class Page(HTMLParser):
    """The parts of the page the tests look at: table cells by row, tags seen, images, figure captions."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: list[tuple[str, dict]] = []
        self.captions: dict[str, str] = {}
        self._cell: list[str] | None = None
        self._figure: str | None = None
        self._caption: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tr" and attrs.get("id", "").startswith("row-"):
            self.rows.append([])
        elif tag == "td" and self.rows:
            self._cell = []
        elif tag == "figure":
            self._figure = attrs.get("id")
        elif tag == "figcaption":
            self._caption = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "figcaption" and self._caption is not None:
            self.captions[self._figure] = "".join(self._caption)
            self._caption = None

    def handle_data(self, data):
        for part in (self._cell, self._caption):
            if part is not None:
                part.append(data)

    def images(self) -> dict[str, bytes]:
        """Figure id -> the SVG document of its image."""
        out, figure = {}, None
        for tag, attrs in self.tags:
            if tag == "figure":
                figure = attrs.get("id")
            if tag == "img":
                prefix = "data:image/svg+xml;base64,"
                assert attrs["src"].startswith(prefix)
                out[figure] = base64.b64decode(attrs["src"][len(prefix) :])
        return out


@pytest.fixture(scope="module")
def page(full_report: Path) -> Page:
    return Page(full_report.read_text(encoding="utf-8"))


def test_table_has_one_row_per_model_and_variant(page):
    got = [(r[1], r[2], r[7], r[9], r[11], r[12]) for r in page.rows]
    assert got == [
        ("efficientnet_b0", "trained, 6 epochs (best: epoch 6)", "88.50", "—", "size", ""),
        ("efficientnet_b0", "baseline", "88.50", "12.00", "latency, size", ""),
        ("efficientnet_b0", "int8", "88.10", "6.00", "latency, size", ""),
        ("efficientnet_b0", "prune 50%", "85.00", "7.50", "", ""),
        ("run_partial", "trained, 3 epochs (best: epoch 3)", "71.11", "—", "", "no summary.json (still training?)"),
        (NASTY_MODEL, "torch fp32 batch 1 224px", "76.00", "5.00", "latency", ""),
        ("efficientnet_b1", "torch fp32 batch 1 224px", "79.00", "9.00", "", ""),
        ("efficientnet_b2", "torch fp32 batch 1 224px", "77.00", "8.00", "", ""),
        ("efficientnet_b7", "torch fp32 batch 1 224px", "—", "—", "", "failed: OOM"),
    ]
    assert page.rows[0][3].endswith(NASTY_DIR) and page.rows[0][4] == "4.02 M" and page.rows[0][5] == "0.800 G"


def test_pareto_captions_name_the_frontier_and_the_rows_left_out(page):
    assert page.captions["pareto-latency"] == (
        "Frontier (no other row is both faster and more accurate): #6, #3, #2. "
        "Not plotted, no top-1 or no latency: #1, #5, #9."
    )
    assert page.captions["pareto-size"].startswith(
        "Frontier (no other row is both smaller and more accurate): #3, #1, #2."
    )
    assert "#5, #9" in page.captions["pareto-size"]


def test_every_section_has_its_plot_as_a_valid_svg(page):
    images = page.images()
    assert set(images) == {"pareto-latency", "pareto-size", "training-1", "training-2", "compression-1-1",
                           "compression-1-2"}  # fmt: skip
    for svg in images.values():
        assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    assert "best validation top-1 88.50% at epoch 6" in page.captions["training-1"]
    assert "lowest SQNR: " + NASTY_LAYER + ".5 (25.0 dB)" in page.captions["compression-1-1"]


def test_user_strings_are_escaped_and_nothing_can_run_or_load(full_report, page):
    text = full_report.read_text(encoding="utf-8")
    for raw in ("<img src=x", "<script", "onerror=alert(1)>", '"b0"'):
        assert raw not in text
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;q&quot; &#x27;a&#x27;" in text
    assert "blocks.0&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert not {tag for tag, _ in page.tags} & {"script", "iframe", "object", "embed", "form", "base"}
    assert [a for tag, a in page.tags if tag == "link"] == [{"rel": "icon", "href": "data:,"}]
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert not name.startswith("on")
            if name in ("src", "href"):
                assert value.startswith("data:"), (tag, name, value[:40])
    csp = next(a["content"] for tag, a in page.tags if tag == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in csp and "img-src data:" in csp


def test_the_api_warns_about_skipped_lines_and_lists_them_in_the_page(tmp_path):
    run = write_run(tmp_path, metrics_text=json.dumps(epoch_record(1)) + '\n{"epoch": 2, "tr')
    with pytest.warns(ReportWarning, match="skipped 1 bad line"):
        out = build_report([run], tmp_path / "r.html")
    assert "Problems found reading the inputs" in out.read_text() and "skipped 1 bad line (2)" in out.read_text()


def test_a_report_with_nothing_to_plot_still_has_its_table(tmp_path):
    bench = write_bench(tmp_path / "bench.json", [bench_result("efficientnet_b0", top1=None)])
    out = build_report([bench], tmp_path / "r.html")
    page = Page(out.read_text())
    assert len(page.rows) == 1 and page.rows[0][9] == "10.00"
    assert page.images() == {}
    assert "no row has both a top-1 accuracy and a latency, so there is nothing to plot" in out.read_text()


def test_prune_plot_names_only_the_most_sensitive_layers():
    layers = [PruneSensitivity(f"l{i}", [0.0, 0.5], [80.0, 80.0 - i]) for i in range(12)]
    report = CompressionReport("m", prune_sensitivity=layers)
    plot = prune_sensitivity_plot(report, highlight=3)
    assert "the 3 losing the most accuracy are coloured" in plot.caption
    assert plot.caption.endswith("most sensitive: l11 (-11.0 points), l10 (-10.0 points), l9 (-9.0 points)")
    assert plot.svg == prune_sensitivity_plot(report, highlight=3).svg  # deterministic bytes


@pytest.mark.parametrize(
    ("make_out", "expected"),
    [
        (lambda tmp: tmp, "is a folder"),
        (lambda tmp: tmp / "report.json", "must end in .html"),
        (lambda tmp: tmp / "missing" / "report.html", "does not exist"),
        (lambda tmp: tmp / "notes.html", "is not an HTML page; refusing to overwrite it"),
    ],
)
def test_refuses_an_output_that_would_destroy_something(tmp_path, make_out, expected):
    (tmp_path / "notes.html").write_text("my precious notes")
    with pytest.raises(EffnetError, match=expected):
        check_output(make_out(tmp_path), [])
    assert (tmp_path / "notes.html").read_text() == "my precious notes"


def test_refuses_to_overwrite_an_input_and_replaces_an_old_report(tmp_path):
    bench = write_bench(tmp_path / "bench.html", [bench_result("efficientnet_b0")])
    with pytest.raises(EffnetError, match="is one of the inputs"):
        check_output(bench, [bench])
    old = tmp_path / "report.html"
    old.write_text("<!DOCTYPE html><html><body>old</body></html>")
    data = load_inputs([write_bench(tmp_path / "b.json", [bench_result("efficientnet_b0", top1=None)])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report(data, old, title="Nightly <bench>")
    text = old.read_text()
    assert "old</body>" not in text and "<title>Nightly &lt;bench&gt;</title>" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left
