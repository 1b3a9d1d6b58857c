"""Timestamp text → UTC instants, with naive values read in the source's time zone.

One parser for the cast of timestamp columns and for ``timestamp(...)`` in derived columns, so both
treat offsets, naive values and daylight-saving changes alike. A value with an explicit offset (or
``Z``) keeps it. A naive value is wall-clock time in ``zone`` (UTC when no zone is set): a wall time
that a clock change skips (spring forward) does not exist, and is reported, never shifted; a wall time
that occurs twice (fall back) is read as its first occurrence (the daylight-saving one), so a repeated
hour keeps its rows in order of the clock and no data is lost.
"""

from __future__ import annotations

import zoneinfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: An explicit UTC offset (or ``Z``) at the end of an ISO 8601 time: such values are parsed apart from naive ones
#: (pandas would otherwise carry one value's offset over to the naive values after it).
_OFFSET = r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"
#: Appended to a cast failure whose value is a skipped local time.
GAP = "local time skipped by a daylight-saving change in "


def check_zone(name: str) -> str:
    """``name`` if it is an IANA time zone (``Europe/Berlin``); a ``ValueError`` that says so otherwise."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"{name!r} is not an IANA time zone such as 'UTC' or 'Europe/Berlin'") from err
    return name


def parse_timestamps(arr: pa.Array, target: pa.DataType, zone: str | None = None) -> tuple[pa.Array, np.ndarray]:
    """Parse ISO 8601 text to ``target``; unparsable values become null. Also returns the mask of naive
    values that do not exist in ``zone`` (null too), so the caller can say why."""
    text = pc.utf8_trim_whitespace(arr)
    offset = pc.fill_null(pc.match_substring_regex(text, _OFFSET), False).to_numpy(zero_copy_only=False)
    s = pd.Series(text.to_pandas(), dtype="object")
    parsed = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    gap = np.zeros(len(s), dtype=bool)
    if offset.any():
        parsed[offset] = pd.to_datetime(s[offset], utc=True, errors="coerce", format="ISO8601")
    naive = ~offset
    if naive.any():
        if zone is None or zone == "UTC":
            parsed[naive] = pd.to_datetime(s[naive], utc=True, errors="coerce", format="ISO8601")
        else:
            local = pd.to_datetime(s[naive], errors="coerce", format="ISO8601")
            if getattr(local.dt, "tz", None) is not None:  # pandas read an offset the pattern missed
                localized = local.dt.tz_convert("UTC")
            else:
                earlier = np.ones(len(local), dtype=bool)  # ambiguous: the first (daylight-saving) occurrence
                localized = local.dt.tz_localize(zone, ambiguous=earlier, nonexistent="NaT").dt.tz_convert("UTC")
                gap[naive] = (local.notna() & localized.isna()).to_numpy()
            parsed[naive] = localized
    return pa.array(parsed, type=target, from_pandas=True), gap


def local_fields_type(zone: str | None) -> pa.DataType:
    """The Arrow type that makes ``pc.hour`` and friends read wall-clock time in ``zone``."""
    return pa.timestamp("us", tz=zone or "UTC")
