"""``effnet report``: a thin layer over effnet.report, with one-line errors and warnings on stderr."""

import base64
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.report.factories import bench_result, epoch_record, write_bench, write_run
from tests.report.test_html import Page

from effnet.cli import main


def test_cli_writes_the_report_and_prints_warnings(tmp_path, capsys):
    run = write_run(tmp_path, metrics_text=json.dumps(epoch_record(1)) + "\n{")
    bench = write_bench(tmp_path / "bench.json", [bench_result("efficientnet_b0", top1=None)])
    out = tmp_path / "report.html"
    assert main(["report", str(run), str(bench), "--out", str(out), "--title", "B0 study"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote {out} (2 model rows from 2 inputs)"
    assert captured.err.startswith("effnet: warning: ") and "skipped 1 bad line (2)" in captured.err
    assert "<title>B0 study</title>" in out.read_text()


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "notes.json").write_text('{"todo": []}')
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "notes.json"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"effnet: error: {tmp_path / 'notes.json'}: ")
    assert not out.exists()


def test_cli_refuses_to_write_over_an_input(tmp_path, capsys):
    bench = write_bench(tmp_path / "bench.json", [bench_result("efficientnet_b0")])
    assert main(["report", str(bench), "--out", str(bench)]) == 1
    assert "must end in .html" in capsys.readouterr().err
    assert json.loads(bench.read_text())["results"][0]["model"] == "efficientnet_b0"


# -- as a user runs it: `effnet report` in a subprocess, then the HTML it wrote ------------------


def effnet_report(*argv: str) -> str:
    """Run ``effnet report ARGV`` in a fresh process; return the page it wrote."""
    done = subprocess.run(
        [sys.executable, "-m", "effnet", "report", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return Path(argv[argv.index("--out") + 1]).read_text(encoding="utf-8")


def figures(page: str) -> dict[str, ET.Element]:
    """Each figure's SVG (by the figure's id), parsed with its comments: matplotlib writes each text as one."""
    found = {}
    for anchor, data in re.findall(r'<figure id="([^"]+)"><img src="data:image/svg\+xml;base64,([^"]+)"', page):
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
        found[anchor] = ET.fromstring(base64.b64decode(data), parser=parser)
    return found


def by_id(svg: ET.Element, prefix: str) -> list[ET.Element]:
    return [g for g in svg.iter(SVG + "g") if g.get("id", "").startswith(prefix)]


def comment(element: ET.Element) -> str:
    return next(c.text.strip() for c in element.iter() if c.tag is ET.Comment)


def rectangle(path_d: str) -> tuple[float, float, float, float]:
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path_d)]
    xs, ys = numbers[0::2], numbers[1::2]
    return min(xs), min(ys), max(xs), max(ys)


SVG = "{http://www.w3.org/2000/svg}"


def test_one_epoch_run_has_sensible_axes_and_words(tmp_path):
    run = write_run(tmp_path, name="one", metrics_text=json.dumps(epoch_record(0)) + "\n", summary={"epochs": 1})
    page = effnet_report(str(run), "--out", str(tmp_path / "r.html"))
    assert "trained, 1 epoch (best: epoch" in page and "1 epochs" not in page
    assert "<figcaption>1 epoch; best validation" in page
    (curves,) = [svg for anchor, svg in figures(page).items() if anchor.startswith("training")]
    ticks = [comment(tick) for tick in by_id(curves, "xtick_")]
    assert ticks == ["0", "0", "0"]  # one tick per panel, at the epoch; not -0.045 ... 0.045


def test_point_labels_do_not_overlap_each_other_or_the_points(tmp_path):
    # Near and identical points: batch sizes of one model, repeated runs, a crowded frontier.
    points = [(10, 77.7), (10.2, 77.7), (10.1, 77.6), (10, 77.7), (12, 78), (5, 76), (5.1, 76.05), (20, 79),
              (20, 79), (8, 77), (8.3, 77.1), (8.1, 77.0), (8.05, 77.02), (9.9, 77.68)]  # fmt: skip
    results = [
        bench_result(f"m{i}", latency_ms_median=x, top1=y, size_mb=16 + i / 50) for i, (x, y) in enumerate(points)
    ]
    bench = write_bench(tmp_path / "bench.json", results)
    page = effnet_report(str(bench), "--out", str(tmp_path / "r.html"))
    for anchor in ("pareto-latency", "pareto-size"):
        svg = figures(page)[anchor]
        labels = by_id(svg, "point-label-")
        boxes = [rectangle(next(label.iter(SVG + "path")).get("d")) for label in labels]
        named = [int(n) for label in labels for n in re.findall(r"#(\d+)", comment(label))]
        assert sorted(named) == list(range(1, len(points) + 1)), anchor  # every row named exactly once
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert min(a[2], b[2]) <= max(a[0], b[0]) + 0.01 or min(a[3], b[3]) <= max(a[1], b[1]) + 0.01, (a, b)
        centres = [(float(u.get("x")), float(u.get("y"))) for g in by_id(svg, "points-") for u in g.iter(SVG + "use")]
        assert len(centres) == len(points)
        for x, y in centres:
            assert not any(b[0] < x < b[2] and b[1] < y < b[3] for b in boxes), (anchor, x, y)


def test_table_says_what_each_top1_was_measured_on(tmp_path):
    run = write_run(tmp_path, name="b0", summary={"data": "folder:/data/pets (90/10 split, seed 0)"})
    old_run = write_run(tmp_path, name="old")  # a summary.json from before effnet recorded the data
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "schema": "effnet.bench",
                "schema_version": 1,
                "data": "/data/val",
                "results": [bench_result("b0", top1_images=500), bench_result("b1", top1=None)],
            }
        )
    )
    page = effnet_report(str(run), str(old_run), str(bench), "--out", str(tmp_path / "r.html"))
    assert '<th class="text src">top-1 measured on</th>' in page
    rows = Page(page).rows
    assert [r[8] for r in rows] == [
        "validation split of folder:/data/pets (90/10 split, seed 0)",
        "validation split (data not recorded)",
        "/data/val (500 images)",
        "",  # no top-1, nothing measured
    ]
