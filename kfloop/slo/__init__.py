"""Service level objectives: each indicator and its error budget over ``slo.window`` (``kfloop slo status``).

- :mod:`kfloop.slo.status`: :class:`~kfloop.slo.status.SloStatus` and :func:`~kfloop.slo.status.slo_status`;
- :mod:`kfloop.slo.runs`: the record every ``kfloop run`` leaves (the pipeline-success indicator's events);
- :mod:`kfloop.slo.freshness`: fresh and stale minutes of the online features, from the freshness samples;
- :mod:`kfloop.slo.serving`: served requests, server errors and slow ones, from the serving request samples;
- :mod:`kfloop.slo.prometheus`: every indicator from Prometheus' HTTP API (a cluster).
"""
