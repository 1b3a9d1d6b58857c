"""The ports a server binds, checked before anything heavy is imported or loaded.

KServe's own bind error is a traceback after the model has loaded; this check fails in a fraction of a second
with one line, and it imports nothing but the standard library, so ``kfloop serve`` says it before it imports
the serving stack.
"""

from __future__ import annotations

import errno
import socket

from kfloop.errors import ConfigError, PortInUseError

#: The cluster components listen on every interface (the kubelet's probes and Knative's queue proxy reach the
#: pod's address); ``kfloop serve`` on this machine only, unless its ``--host`` says otherwise.
ALL_INTERFACES, LOCAL_HOST = "0.0.0.0", "127.0.0.1"

__all__ = ["ALL_INTERFACES", "LOCAL_HOST", "check_ports"]


def check_ports(http_port: int, grpc_port: int, host: str = ALL_INTERFACES) -> None:
    """Fail with one clear line when ``host`` is not this machine's or a port is taken."""
    for port, what in ((http_port, "HTTP (serving.http_port, --http-port)"), (grpc_port, "gRPC (serving.grpc_port)")):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as err:
                if isinstance(err, socket.gaierror) or err.errno == errno.EADDRNOTAVAIL:
                    raise ConfigError(f"--host {host!r} is not an address of this machine ({err.strerror})") from err
                raise PortInUseError(f"{what} port {port} is not available ({err.strerror}): another server?") from err
