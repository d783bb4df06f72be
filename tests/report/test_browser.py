"""The report in a real browser: headless Chromium draws it (a screenshot with the plots' colours) without errors.

Chromium is a test dependency (CI installs Debian's ``chromium``); without it this test fails, never skips.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from effnet.report._plots import FRONTIER_COLOR, KIND_STYLE

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers have a small /dev/shm
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
    "--window-size=1200,2000",
]


def screenshot(page: Path, png: Path, profile: Path) -> list[str]:
    """Render ``page`` to ``png``; return the page's console messages (Chromium logs them as ``:CONSOLE``)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (the browser test needs it)")
    done = subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def pixels_near(image: Image.Image, hex_color: str, tolerance: int = 24) -> int:
    target = tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return sum(
        count
        for count, rgb in image.getcolors(maxcolors=1 << 24)
        if all(abs(a - b) <= tolerance for a, b in zip(rgb, target, strict=True))
    )


def test_report_renders_in_headless_chromium(full_report, tmp_path):
    # The console check must be able to fail: a page with a script error and a blocked request is caught.
    canary = tmp_path / "canary.html"
    canary.write_text(
        '<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="img-src data:">'
        '<img src="https://example.invalid/x.png"><script>console.error("canary"); missing();</script>'
    )
    canary_messages = screenshot(canary, tmp_path / "canary.png", tmp_path / "profile-canary")
    assert any("canary" in m for m in canary_messages) and any("Uncaught" in m for m in canary_messages)
    assert any("Content Security Policy" in m for m in canary_messages)

    png = tmp_path / "report.png"
    messages = screenshot(full_report, png, tmp_path / "profile")
    assert messages == [], "\n".join(messages)
    image = Image.open(png).convert("RGB")
    assert image.size == (1200, 2000)
    assert len(image.getcolors(maxcolors=1 << 24)) > 200, "the screenshot is (nearly) blank"
    white = pixels_near(image, "#ffffff", tolerance=2)
    assert white < 0.97 * 1200 * 2000, "the screenshot is (nearly) all white"
    # The page's CSS uses none of the plot colours, so finding them means the SVG plots were drawn.
    assert pixels_near(image, FRONTIER_COLOR) > 200, "no Pareto frontier drawn"
    for kind in ("bench", "compression"):
        assert pixels_near(image, KIND_STYLE[kind][0]) > 50, f"no {kind} points drawn"
    shutil.copy(png, full_report.with_suffix(".png"))  # kept next to the report for a look after a failure
