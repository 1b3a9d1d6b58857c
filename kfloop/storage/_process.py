"""Whether a process that wrote a lock or heartbeat is known dead: same machine, and its pid is gone.

Writers of shared state record :func:`host_identity` and their pid; a reader on the same machine can then
tell a killed writer from a slow one without waiting out a staleness period.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def host_identity() -> str:
    """This host, qualified by its boot id and PID namespace, or "" when that cannot be told. A hostname alone
    does not name a machine (two laptops called ``localhost``, VMs from one image), and every host's initial PID
    namespace has the same inode number: only the kernel's per-boot random id tells machines apart. Without it
    (no /proc) no process check is made and writers are judged by their heartbeat's age alone."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{socket.gethostname()}/{boot}/{ns}" if boot and ns else ""


def pid_exited(pid: object) -> bool:
    """True only when no process ``pid`` exists here (a pid reused by another process counts as alive)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def writer_exited(body: dict | None, host_key: str = "host_id") -> bool:
    """Whether the writer that recorded its :func:`host_identity` under ``host_key`` and its ``pid`` in
    ``body`` ran on this host and has exited."""
    if not body:
        return False
    here = host_identity()
    return bool(here) and body.get(host_key) == here and pid_exited(body.get("pid"))
