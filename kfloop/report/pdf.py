"""The report page printed to PDF by headless Chromium (``--print-to-pdf``): the browser lays the page out exactly as
it shows, SVG plots included, with no PDF library of our own. Chromium is a system package (Debian: ``chromium``);
without it, a PDF is a clear error naming the package, never a silent skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from kfloop.errors import KfloopError

__all__ = ["APT_PACKAGE", "find_chromium", "print_pdf"]

#: The Debian/Ubuntu package that installs ``/usr/bin/chromium``.
APT_PACKAGE = "chromium"
#: The names a Chromium binary goes by on PATH, preferred first.
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Printing a report takes about a second; a browser that hangs is stopped after this long.
TIMEOUT_S = 120.0


def find_chromium() -> Path:
    """The Chromium binary on PATH, or a KfloopError that names the package to install."""
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise KfloopError(
        f"--pdf needs headless Chromium and none is on PATH ({', '.join(_NAMES)}): install it with "
        f"`apt-get install {APT_PACKAGE}`, or make the report without --pdf"
    )


def print_pdf(html: str, *, chromium: Path | None = None, timeout: float = TIMEOUT_S) -> bytes:
    """``html`` printed to PDF (A4, backgrounds on, no header or footer). The browser runs in a throw-away profile
    under the temp directory (a pod's root filesystem and home are read-only) and fetches nothing: the page is
    self-contained."""
    binary = chromium or find_chromium()
    with tempfile.TemporaryDirectory(prefix="kfloop-report-pdf-") as tmp:
        page, out = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        page.write_text(html, encoding="utf-8")
        args = [
            str(binary),
            "--headless",
            "--no-sandbox",  # a container has no user namespaces for the sandbox; the page is our own, with no script
            "--disable-gpu",
            "--disable-dev-shm-usage",  # a pod's /dev/shm is 64 MiB
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-pdf-header-footer",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--crash-dumps-dir={Path(tmp) / 'crashes'}",
            f"--print-to-pdf={out}",
            page.as_uri(),
        ]
        env = {**os.environ, "HOME": tmp, "XDG_CONFIG_HOME": tmp, "XDG_CACHE_HOME": tmp}
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise KfloopError(f"{binary}: printing the report to PDF took longer than {timeout:.0f} s") from err
        data = out.read_bytes() if out.is_file() else b""
        if done.returncode != 0 or not data.startswith(b"%PDF"):
            tail = " ".join((done.stderr or done.stdout or "").strip().splitlines()[-3:])
            raise KfloopError(
                f"{binary} did not print the report to PDF (exit {done.returncode}): {tail or 'no output'}"
            )
        return data
