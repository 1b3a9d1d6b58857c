"""The serving clock: the request time a feature view's TTL counts back from.

In production that is the wall clock. Replaying history (the demo's data, tests, a backtest against a
store materialized from old events) needs the time the requests belong to instead, or every stored value
would be expired; the environment pins it, so the same server code serves both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from kfloop.errors import ConfigError

#: ISO-8601 time with a UTC offset (e.g. ``2026-04-01T00:00:00+00:00``) that serving takes as "now".
AS_OF_ENV = "KFLOOP_SERVING_AS_OF"


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def serving_clock(environ: Mapping[str, str]) -> Callable[[], datetime]:
    """The wall clock, or the time ``$KFLOOP_SERVING_AS_OF`` pins (a ConfigError names a bad value)."""
    text = environ.get(AS_OF_ENV, "").strip()
    if not text:
        return _wall_clock
    try:
        at = datetime.fromisoformat(text)
    except ValueError as err:
        raise ConfigError(f"{AS_OF_ENV}={text!r} is not an ISO-8601 time (e.g. 2026-04-01T00:00:00Z)") from err
    if at.tzinfo is None:
        raise ConfigError(f"{AS_OF_ENV}={text!r} has no UTC offset (write e.g. 2026-04-01T00:00:00Z)")
    pinned = at.astimezone(UTC)
    return lambda: pinned
