"""KServe's first import, with a neutral ``sys.argv``.

``kserve.model_server`` parses ``sys.argv`` when it is first imported (its module-level argparse), and
``--config`` would be taken as an abbreviation of its ``--configure_logging``. The entry points import
KServe through :func:`import_kserve` before anything else does; they parse KServe's flags themselves
(``kserve.model_server.parser``).
"""

from __future__ import annotations

import sys


def import_kserve() -> None:
    """Import ``kserve`` (once) while ``sys.argv`` holds only the program name; ``sys.argv`` is restored."""
    if "kserve.model_server" in sys.modules:
        return
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve  # noqa: F401
    finally:
        sys.argv = argv
