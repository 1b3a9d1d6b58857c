"""kfloop.serving — KServe model classes (predictor, Feast transformer), the local server, the inference
log and the InferenceService builder.

``kserve.model_server`` parses ``sys.argv`` when it is first imported (its module-level argparse), and
``--config`` would be taken as an abbreviation of its ``--configure_logging``. Every kfloop module that
uses KServe imports it through this package, which does that first import with a neutral argv; the
serving entry points parse KServe's flags themselves (``kserve.model_server.parser``).
"""

from __future__ import annotations

import sys

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve  # noqa: F401  (the guarded first import)
finally:
    sys.argv = _argv
del _argv
