"""The README's screenshot: ``python -m atlas_core.report.screenshot`` renders the committed Coder-0.5B full run's
atlas page and writes a PNG of it through headless Chromium; without Chromium it is one error naming the install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atlas_core.report import screenshot as shot

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(
    shot.find_chromium() is None,
    reason="headless Chromium not installed: apt-get install -y chromium (.ci/run installs it); the screenshot needs it",
)
def test_the_command_writes_a_png_of_the_atlas_page(tmp_path):
    from PIL import Image

    out = tmp_path / "docs" / "atlas.png"  # its folder does not exist yet: the command makes it
    res = subprocess.run(
        [sys.executable, "-m", "atlas_core.report.screenshot", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert str(out) in res.stdout
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    im = Image.open(out).convert("L")
    assert im.size == shot.WINDOW
    lo, hi = im.getextrema()
    assert hi - lo > 100  # drawn, not blank


def test_the_committed_screenshot_is_the_commands_and_small():
    from PIL import Image

    committed = REPO / "docs" / "atlas.png"  # the README shows it; regenerate: python -m atlas_core.report.screenshot
    assert committed.is_file() and committed.read_bytes().startswith(PNG_SIGNATURE)
    assert Image.open(committed).size == shot.WINDOW
    assert committed.stat().st_size < 400_000


def test_without_chromium_the_command_names_the_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(shot, "find_chromium", lambda: None)
    out = tmp_path / "atlas.png"
    assert shot.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("atlas: error: headless Chromium is not installed") and "apt-get install -y chromium" in err
    assert not out.exists()
