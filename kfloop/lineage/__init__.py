"""Lineage with OpenLineage: every step, the drift check and the retrain trigger emit run events (:func:`emits`),
sent by the config's transport (``governance.lineage``); ``kfloop lineage`` walks them (:mod:`kfloop.lineage.walk`).

The OpenLineage client is imported only when an event is built, so importing a stage stays cheap.
"""

from kfloop.lineage.run import emits, pipeline_parent

__all__ = ["emits", "pipeline_parent"]
