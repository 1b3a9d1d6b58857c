"""kfloop.serving — KServe model classes (predictor, Feast transformer), the local server, the inference
log and the InferenceService builder.

Importing this package has no side effects. KServe parses ``sys.argv`` when first imported, so the entry
points (``python -m kfloop.serving``, the ``kfloop`` CLI) import it through
:func:`kfloop.serving._kserve.import_kserve` (or with a neutral ``sys.argv``) first.
"""
