"""A screenshot of a run's atlas page, taken by headless Chromium: the README's ``docs/atlas.png``.

::

    python -m atlas_core.report.screenshot                      # the committed Coder-0.5B full run -> docs/atlas.png
    python -m atlas_core.report.screenshot --run reports/runs/qwen2.5-coder-0.5b-instruct-full --out shot.png

The page is rendered into a temporary folder (the run folder is not written) and opened from disk, offline.
:func:`chromium` is the one invocation of the browser: the report's browser test
(``tests_atlas/report/test_report_pages.py``) runs it too. Chromium is Debian's ``chromium`` package
(``apt-get install -y chromium``; ``.ci/run`` installs it); without it the command is one error naming that.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from atlas_core import AtlasError
from atlas_core.data import BASELINES_DIR

__all__ = ["DEFAULT_OUT", "DEFAULT_RUN", "WINDOW", "chromium", "find_chromium", "main", "screenshot"]

DEFAULT_RUN = BASELINES_DIR / "qwen2.5-coder-0.5b-instruct-full"  # the committed full-profile run of the default model
DEFAULT_OUT = Path("docs") / "atlas.png"
WINDOW = (1280, 1600)
INSTALL = "apt-get install -y chromium"

# headless, without a sandbox (a container's root), no network of its own, a throwaway profile per call;
# console messages on stderr, so that a caller can look for script errors
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """The Chromium executable (``chromium`` on the PATH, else ``/usr/bin/chromium``), or None."""
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def chromium(*args: str, profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run headless Chromium with ``args`` after the common flags and ``profile`` as its user-data folder;
    stdout and stderr are captured as text. Without Chromium, an :class:`AtlasError` naming the install."""
    exe = find_chromium()
    if exe is None:
        raise AtlasError(f"headless Chromium is not installed (no `chromium` on the PATH): {INSTALL}")
    cmd = [exe, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def screenshot(
    run_dir: str | Path = DEFAULT_RUN, out: str | Path = DEFAULT_OUT, window: tuple[int, int] = WINDOW
) -> Path:
    """Render ``run_dir``'s atlas page into a temporary folder, screenshot its top ``window`` (width, height)
    with headless Chromium and write the PNG to ``out`` (its folder made if needed). Returns ``out``."""
    from atlas_core.report import write_report

    out = Path(out)
    if find_chromium() is None:  # before the page is rendered: the error comes at once
        raise AtlasError(f"headless Chromium is not installed (no `chromium` on the PATH): {INSTALL}")
    run = Path(run_dir)
    try:  # the page shows the run folder: relative to here when it is under here, not this machine's absolute path
        run = run.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    with tempfile.TemporaryDirectory(prefix="atlas-screenshot-") as tmp:
        page = write_report(run, Path(tmp) / "atlas.html")
        shot = Path(tmp) / "atlas.png"
        res = chromium(
            f"--window-size={window[0]},{window[1]}", f"--screenshot={shot}", page.as_uri(), profile=Path(tmp) / "p"
        )
        if res.returncode != 0 or not shot.is_file() or shot.stat().st_size == 0:
            raise AtlasError(
                f"Chromium wrote no screenshot of {page} (exit {res.returncode}); its last output:\n{res.stderr[-2000:]}"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m atlas_core.report.screenshot [--run RUN_DIR] [--out PNG] [--window W,H]``."""
    ap = argparse.ArgumentParser(
        prog="python -m atlas_core.report.screenshot",
        description="Screenshot a run's atlas page with headless Chromium (the README's docs/atlas.png).",
    )
    ap.add_argument("--run", type=Path, default=DEFAULT_RUN, help="run folder (default: the committed %(default)s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write (default: %(default)s)")
    ap.add_argument(
        "--window",
        default=f"{WINDOW[0]},{WINDOW[1]}",
        help="browser window WIDTH,HEIGHT in pixels (default: %(default)s)",
    )
    args = ap.parse_args(argv)
    try:
        width, height = (int(v) for v in args.window.split(","))
    except ValueError:
        ap.error(f"--window takes WIDTH,HEIGHT in pixels, e.g. 1280,1600; got {args.window!r}")
    try:
        out = screenshot(args.run, args.out, (width, height))
    except AtlasError as exc:
        print(f"atlas: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: {out.stat().st_size // 1024} KiB, {width}x{height}, the atlas page of {args.run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
