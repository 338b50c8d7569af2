"""The HTML report of a tiny run rendered in headless Chromium: it loads offline with no console error
and no network request of its own, every figure is an <img> in the DOM, and the screenshot shows the
plots (the figures' line colours are on screen).

Skipped where Chromium is not installed (Debian: ``apt-get install chromium``). Set
``SALTSEG_SCREENSHOT=path.png`` to keep the screenshot (e.g. benchmarks/figures/report_screenshot.png).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FIGURES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)"
)

# the browser's own background requests (time sync, account check), not the page's
_BROWSER_HOSTS = re.compile(r"^https?://([a-z0-9-]+\.)*(google\.com|gstatic\.com|googleapis\.com)(/|$)")


def _chromium(page: Path, work: Path, screenshot: Path | None = None) -> tuple[str, str, list[str]]:
    """Render ``page`` headless: (DOM, stderr log, URLs the page requested over the network)."""
    net = work / "net.json"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={work / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing can leave the machine
        f"--log-net-log={net}",
        "--enable-logging=stderr",
        "--v=0",
        "--hide-scrollbars",
        "--window-size=1280,2000",
        "--dump-dom",
    ]
    if screenshot is not None:
        cmd.append(f"--screenshot={screenshot}")
    cmd.append(page.resolve().as_uri())
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    urls = []
    if net.exists():
        text = net.read_text(errors="replace")
        urls = sorted({u for u in re.findall(r'"url":"([^"]+)"', text) if u.startswith(("http:", "https:"))})
    return res.stdout, res.stderr, [u for u in urls if not _BROWSER_HOSTS.match(u)]


def _console_errors(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]


def test_report_renders_offline_in_chromium(tiny_run: Path, tmp_path: Path) -> None:
    from saltseg.diagnostics.report import write_report

    page = write_report([tiny_run], tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    dom, log, requests = _chromium(page, tmp_path / "a", shot)

    assert _console_errors(log) == []
    assert requests == []
    for fid in FIGURES:
        assert re.search(rf'<figure id="{fid}"><img src="data:image/png;base64,', dom), fid
    assert "tiny" in dom and 'id="tbl-confusion"' in dom

    assert shot.exists() and shot.stat().st_size > 50_000
    with Image.open(shot) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert rgb.shape == (2000, 1280, 3)
    # the learning-curve figure is on screen: its train-loss blue, score green and lr purple lines
    for colour in ((0x25, 0x63, 0xEB), (0x16, 0xA3, 0x4A), (0x7C, 0x3A, 0xED)):
        assert (np.abs(rgb - np.array(colour)).max(axis=-1) <= 12).sum() > 50, colour
    keep = os.environ.get("SALTSEG_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep)


def test_the_browser_checks_catch_a_broken_page(tmp_path: Path) -> None:
    """Negative control: a script error and an external image are both detected."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="https://example.com/x.png"><script>undefined_fn();</script></body></html>'
    )
    _, log, requests = _chromium(page, tmp_path / "b")
    assert any("undefined_fn" in ln for ln in _console_errors(log))
    assert requests == ["https://example.com/x.png"]
