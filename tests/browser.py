"""Headless Chromium for the tests that load a page (the Evidently dashboard, the periodic report): driven over the
DevTools protocol (``--remote-debugging-pipe``), no extra package."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, offline and quiet: no sandbox (root in CI), no GPU, no background fetches.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _above_4(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Browser:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (fd 3 commands in, fd 4 replies out)."""

    def __init__(self, profile: Path) -> None:
        cmd_r, self._cmd = os.pipe()
        self._res, res_w = os.pipe()
        cmd_r, res_w = _above_4(cmd_r), _above_4(res_w)  # bash maps them to 3 and 4 (dash reads one digit)
        args = [
            str(CHROMIUM),
            *CHROMIUM_FLAGS,
            "--window-size=1400,2400",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
        ]
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{cmd_r} 4>&{res_w}', "bash", *args],
            pass_fds=(cmd_r, res_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(res_w)
        self._next, self._buffer = 0, b""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, **params: object) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._cmd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            while b"\0" not in self._buffer:
                assert time.monotonic() < deadline, f"no reply to {method}"
                chunk = os.read(self._res, 1 << 20)
                assert chunk, "chromium closed the DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next:
                assert "error" not in reply, reply["error"]
                return reply.get("result", {})

    def page(self, method: str, **params: object) -> dict:
        return self.call(method, self.session, **params)

    def evaluate(self, expression: str) -> object:
        return self.page("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        os.close(self._cmd)
        os.close(self._res)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
