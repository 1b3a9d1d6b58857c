"""Seeded, vectorized flight departures with a learnable arrival delay, plus airport and weather tables.

Why: the second example (``examples/flights``) exercises what card fraud does not: a regression label,
source times as local wall-clock parts in one time zone (across a daylight-saving change), ``NA`` null
tokens, values known only after the event (departure and arrival delays), and attribute tables joined by
key (a snapshot of airports, hourly weather readings). One seed reproduces the same files on any machine.

The delay a flight gets is built from things the model can see, each through one feature path:
- the carrier, the hour of day and the day of week (request features);
- how disrupted the origin and the carrier are now (a state drifting over about a day): the mean delays of
  recent flights, which the feature views aggregate only once each flight has departed / arrived;
- the airport (a hub with few runways is congested: the ``airports`` table);
- the weather at the origin in the departure hour (thunderstorms, wind, low visibility: the ``weather`` table).
A thunderstorm also cancels flights: a cancelled flight has ``NA`` delays and times, so it has no label.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from kfloop.demo.writer import format_from_path, write_frame
from kfloop.formats import FileFormat

#: The airports' one time zone: every schedule time in the source file is wall-clock time here.
ZONE = "America/Chicago"
#: The text the source file writes for "no value" (source.null_values in the example's config).
NULL_TOKEN = "NA"
DEFAULT_START = date(2026, 2, 1)  # 60 days from here cross the change to daylight time on 2026-03-08
DEFAULT_DAYS = 60

#: The flights file's columns (before the config's derived columns), in file order.
COLUMNS: dict[str, str] = {
    "flight_date": "string",
    "dep_time": "string",
    "carrier": "string",
    "flight_number": "int64",
    "origin": "string",
    "dest": "string",
    "distance_miles": "float64",
    "cancelled": "int64",
    "departed_at": "timestamp",
    "arrived_at": "timestamp",
    "dep_delay_min": "float64",
    "arr_delay_min": "float64",
}
AIRPORT_COLUMNS: dict[str, str] = {"origin": "string", "region": "string", "runways": "int64", "hub": "int64"}
WEATHER_COLUMNS: dict[str, str] = {
    "origin": "string",
    "observed_at": "timestamp",
    "wind_kt": "float64",
    "visibility_miles": "float64",
    "precip_in": "float64",
    "thunderstorm": "int64",
}
#: Columns a cancelled flight leaves empty (written as NULL_TOKEN).
CANCELLED_NULLS: tuple[str, ...] = ("departed_at", "arrived_at", "dep_delay_min", "arr_delay_min")

# Airports of the Central time zone: code, region, runways, hub, traffic weight, latitude, longitude.
_AIRPORTS = (
    ("ORD", "great_lakes", 8, 1, 10.0, 41.98, -87.90), ("MDW", "great_lakes", 5, 0, 4.0, 41.79, -87.75),
    ("DFW", "south", 7, 1, 9.0, 32.90, -97.04), ("IAH", "south", 5, 1, 6.0, 29.99, -95.34),
    ("MSP", "great_lakes", 4, 1, 5.0, 44.88, -93.22), ("STL", "plains", 4, 0, 2.5, 38.75, -90.37),
    ("MCI", "plains", 2, 0, 2.0, 39.30, -94.71), ("MSY", "south", 2, 0, 2.0, 29.99, -90.26),
    ("MEM", "south", 4, 0, 1.5, 35.04, -89.98), ("BNA", "south", 4, 0, 3.0, 36.12, -86.68),
    ("AUS", "south", 2, 0, 3.0, 30.19, -97.67), ("SAT", "south", 3, 0, 2.0, 29.53, -98.47),
    ("MKE", "great_lakes", 4, 0, 1.5, 42.95, -87.90), ("OMA", "plains", 3, 0, 1.2, 41.30, -95.89),
    ("OKC", "plains", 3, 0, 1.2, 35.39, -97.60), ("HOU", "south", 4, 0, 2.5, 29.65, -95.28),
)  # fmt: skip
AIRPORTS: tuple[str, ...] = tuple(a[0] for a in _AIRPORTS)
REGIONS: tuple[str, ...] = ("great_lakes", "plains", "south")
# Carriers: code, share of flights, their own typical extra delay (minutes).
_CARRIERS = (("AA", 0.22, 3.0), ("UA", 0.20, 4.0), ("WN", 0.25, 1.0), ("DL", 0.15, -5.0), ("NK", 0.10, 14.0),
             ("G4", 0.08, 10.0))  # fmt: skip
CARRIERS: tuple[str, ...] = tuple(c[0] for c in _CARRIERS)
# Scheduled departures per local hour: none 01:00-04:59 but the few red-eyes placed in the skipped hour.
_HOUR_PROFILE = (
    0.3, 0, 0, 0, 0, 2.0, 5.0, 6.5, 6.0, 5.5, 5.0, 5.0,
    5.5, 5.5, 5.0, 5.0, 5.5, 6.0, 6.0, 5.5, 4.5, 3.5, 2.0, 1.0,
)  # fmt: skip
_MINUTE = np.timedelta64(1, "m")
_HOUR = np.timedelta64(1, "h")


@dataclass(frozen=True)
class FlightsSpec:
    """Everything that determines the generated files; equal specs give identical frames."""

    rows: int
    seed: int = 7
    start: date = DEFAULT_START
    days: int = DEFAULT_DAYS
    dst_gap_rows: int = 3  # red-eyes scheduled in the hour a spring-forward change skips (if in the span)

    def __post_init__(self) -> None:
        if isinstance(self.start, datetime):
            object.__setattr__(self, "start", self.start.date())
        if self.rows < 1 or self.days < 1:
            raise ValueError(f"rows ({self.rows}) and days ({self.days}) must be >= 1")
        if not 0 <= self.dst_gap_rows <= self.rows:
            raise ValueError(f"dst_gap_rows ({self.dst_gap_rows}) must be in [0, rows]")

    @property
    def end(self) -> date:
        """The first local day after the span."""
        return self.start + timedelta(days=self.days)


@dataclass(frozen=True)
class FlightsData:
    """The three frames: flights (nulls as NaN/NaT; written with NULL_TOKEN), airports, weather."""

    flights: pd.DataFrame
    airports: pd.DataFrame
    weather: pd.DataFrame
    dst_gap: list[str]  # "<flight_date> <dep_time>" of the rows whose local time does not exist


def spring_forward(start: date, days: int, zone: str = ZONE) -> datetime | None:
    """The local wall-clock hour a daylight-saving change skips within ``[start, start + days)``, if any."""
    tz = zoneinfo.ZoneInfo(zone)
    for d in range(days):
        day = start + timedelta(days=d)
        for hour in range(24):
            wall = datetime(day.year, day.month, day.day, hour, tzinfo=tz)
            back = wall.astimezone(zoneinfo.ZoneInfo("UTC")).astimezone(tz)
            if back.replace(tzinfo=None) != wall.replace(tzinfo=None):
                return wall.replace(tzinfo=None)
    return None


def _ar1(rng: np.random.Generator, steps: int, width: int, phi: float, sd: float) -> np.ndarray:
    """A stationary AR(1) series per column (steps x width), unit-free: a slowly moving state."""
    noise = rng.normal(0.0, sd * np.sqrt(1 - phi * phi), (steps, width))
    out = np.empty((steps, width))
    out[0] = rng.normal(0.0, sd, width)
    for t in range(1, steps):
        out[t] = phi * out[t - 1] + noise[t]
    return out


def _weather(rng: np.random.Generator, hours: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    """Hourly readings per airport (hours x airports): storms come from a regional and a local instability."""
    n, k = len(hours), len(_AIRPORTS)
    region = np.array([REGIONS.index(a[1]) for a in _AIRPORTS])
    regional = _ar1(rng, n, len(REGIONS), 0.93, 1.0)[:, region]
    local = _ar1(rng, n, k, 0.8, 1.0)
    unstable = 0.75 * regional + 0.66 * local  # unit variance
    afternoon = np.isin(hours.tz_convert(ZONE).hour, range(13, 21)).astype(float)[:, None] * 0.5
    thunder = (unstable + afternoon > 1.9).astype(np.int64)
    wind = np.clip(9.0 + 6.0 * unstable + rng.gamma(2.0, 2.0, (n, k)) + 12.0 * thunder, 0.0, 70.0)
    visibility = np.clip(10.0 - 2.5 * np.maximum(unstable, 0) - 5.0 * thunder + rng.normal(0, 0.7, (n, k)), 0.25, 10.0)
    precip = np.where(unstable > 0.8, rng.gamma(1.5, 0.04, (n, k)) * (1 + 4 * thunder), 0.0)
    return {"thunderstorm": thunder, "wind_kt": np.round(wind, 1), "visibility_miles": np.round(visibility, 2),
            "precip_in": np.round(precip, 2)}  # fmt: skip


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle miles between airport indices ``a`` and ``b``."""
    lat = np.radians(np.array([x[5] for x in _AIRPORTS]))
    lon = np.radians(np.array([x[6] for x in _AIRPORTS]))
    h = np.sin((lat[b] - lat[a]) / 2) ** 2 + np.cos(lat[a]) * np.cos(lat[b]) * np.sin((lon[b] - lon[a]) / 2) ** 2
    return 3958.8 * 2 * np.arcsin(np.sqrt(h))


def _local_text(values: np.ndarray, fmt: str) -> np.ndarray:
    """Naive local datetime64 values as text, NaT as None."""
    series = pd.Series(values)
    return series.dt.strftime(fmt).where(series.notna(), None).to_numpy(dtype=object)


def _schedule(rng: np.random.Generator, spec: FlightsSpec) -> tuple[np.ndarray, pd.DatetimeIndex, np.ndarray]:
    """Scheduled local wall times in order (a day, an hour from the profile, a minute on the 5-minute grid;
    the red-eyes in the skipped hour), their instants, and which ones the clock change skips."""
    n = spec.rows
    gap_hour = spring_forward(spec.start, spec.days)
    n_gap = spec.dst_gap_rows if gap_hour is not None else 0
    day = rng.integers(0, spec.days, n)
    profile = np.array(_HOUR_PROFILE)
    hour = rng.choice(24, n, p=profile / profile.sum())
    minute = 5 * rng.integers(0, 12, n)
    first = np.datetime64(spec.start.isoformat(), "m")
    wall = first + day * np.timedelta64(1, "D") + hour * _HOUR + minute * _MINUTE
    gap = np.datetime64(gap_hour if gap_hour is not None else spec.start.isoformat(), "m")
    if n_gap:
        wall[rng.choice(n, n_gap, replace=False)] = gap + 5 * rng.integers(1, 12, n_gap) * _MINUTE
    wall = np.sort(wall)
    in_gap = (wall >= gap) & (wall < gap + _HOUR) if n_gap else np.zeros(n, dtype=bool)
    # a skipped wall time has no instant: the flight really leaves an hour later (the file keeps the wall time)
    local = pd.DatetimeIndex(wall)
    utc = local.tz_localize(ZONE, nonexistent="shift_forward", ambiguous=np.ones(n, dtype=bool)).tz_convert("UTC")
    return wall, utc, in_gap


def generate(spec: FlightsSpec) -> FlightsData:
    """Build the three frames for ``spec``: flights sorted by scheduled local time (gap rows in place)."""
    rng = np.random.default_rng(spec.seed)
    n, k = spec.rows, len(_AIRPORTS)
    wall, utc, in_gap = _schedule(rng, spec)
    hour = (wall - wall.astype("datetime64[D]")) // _HOUR
    day = (wall.astype("datetime64[D]") - np.datetime64(spec.start.isoformat(), "D")).astype(np.int64)

    # who and where: busy airports more often, a destination at least 100 miles away, a carrier by share
    weight = np.array([a[4] for a in _AIRPORTS])
    origin = rng.choice(k, n, p=weight / weight.sum())
    idx = np.arange(k)
    routes = np.where(_distance(idx[:, None], idx[None, :]) >= 100.0, weight[None, :], 0.0)  # no hops < 100 mi
    cdf = np.cumsum(routes, axis=1)[origin]
    dest = np.minimum((cdf <= (rng.random(n) * cdf[:, -1])[:, None]).sum(axis=1), k - 1)
    share = np.array([c[1] for c in _CARRIERS])
    carrier = rng.choice(len(_CARRIERS), n, p=share / share.sum())
    distance = np.round(_distance(origin, dest), 0)

    # the world's state: weather per airport and hour, disruption per origin and carrier drifting by the hour
    hours = pd.date_range(utc.min().floor("h") - pd.Timedelta(hours=2), utc.max().ceil("h"), freq="h")
    wx = _weather(rng, hours)
    at = (utc.floor("h") - hours[0]) // pd.Timedelta(hours=1)
    thunder, wind, vis = wx["thunderstorm"][at, origin], wx["wind_kt"][at, origin], wx["visibility_miles"][at, origin]
    origin_state = _ar1(rng, len(hours), k, 0.96, 1.0)[at, origin]  # disruption drifting over about a day
    carrier_state = _ar1(rng, len(hours), len(_CARRIERS), 0.97, 1.0)[at, carrier]
    runways = np.array([a[2] for a in _AIRPORTS])
    hub = np.array([a[3] for a in _AIRPORTS])
    weekday = pd.DatetimeIndex(wall).dayofweek.to_numpy()

    dep_delay = (
        np.array([c[2] for c in _CARRIERS])[carrier]
        + 8.0 * hub[origin]
        + 30.0 / runways[origin]
        + 1.8 * np.maximum(hour - 6, 0)  # delays build up through the day
        + 4.0 * np.isin(weekday, (4, 6))  # Friday, Sunday
        + 35.0 * thunder
        + 1.2 * np.maximum(wind - 22.0, 0.0)
        + 10.0 * (vis < 2.0)
        + 8.0 * origin_state
        + 5.0 * carrier_state
        + rng.gamma(1.5, 5.0, n)
        - 18.0
    )
    dep_delay = np.round(np.maximum(dep_delay, -12.0))
    block = distance / 7.5 + 22.0  # minutes: ~450 mph plus taxi
    arr_delay = np.round(dep_delay + 8.0 / runways[dest] + rng.normal(-5.0, 5.0, n))
    cancelled = rng.random(n) < 0.008 + 0.12 * thunder + 0.03 * (origin_state > 1.5)

    departed = utc + pd.to_timedelta(dep_delay, unit="m")
    arrived = departed + pd.to_timedelta(np.round(block + arr_delay - dep_delay), unit="m")
    departed_local = departed.tz_convert(ZONE).tz_localize(None).to_numpy().copy()
    arrived_local = arrived.tz_convert(ZONE).tz_localize(None).to_numpy().copy()
    departed_local[cancelled] = np.datetime64("NaT")
    arrived_local[cancelled] = np.datetime64("NaT")

    # one flight number per carrier and day (the flight id is unique), numbered in departure order
    codes = np.array(CARRIERS, dtype=object)[carrier]
    number = pd.Series(np.zeros(n)).groupby([codes, day]).cumcount().to_numpy() + 100
    flights = pd.DataFrame(
        {
            "flight_date": _local_text(wall, "%Y-%m-%d"),
            "dep_time": _local_text(wall, "%H%M"),
            "carrier": codes,
            "flight_number": number.astype(np.int64),
            "origin": np.array(AIRPORTS, dtype=object)[origin],
            "dest": np.array(AIRPORTS, dtype=object)[dest],
            "distance_miles": distance,
            "cancelled": cancelled.astype(np.int64),
            "departed_at": pd.to_datetime(departed_local),
            "arrived_at": pd.to_datetime(arrived_local),
            "dep_delay_min": np.where(cancelled, np.nan, dep_delay),
            "arr_delay_min": np.where(cancelled, np.nan, arr_delay),
        }
    )
    airports, weather = _tables(hours, wx)
    gap = [f"{d} {t}" for d, t in zip(flights["flight_date"][in_gap], flights["dep_time"][in_gap], strict=True)]
    return FlightsData(flights=flights, airports=airports, weather=weather, dst_gap=gap)


def _tables(hours: pd.DatetimeIndex, wx: dict[str, np.ndarray]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The airports snapshot and the hourly weather readings (UTC times) per airport."""
    airports = pd.DataFrame(
        {
            "origin": list(AIRPORTS),
            "region": [a[1] for a in _AIRPORTS],
            "runways": np.array([a[2] for a in _AIRPORTS], dtype=np.int64),
            "hub": np.array([a[3] for a in _AIRPORTS], dtype=np.int64),
        }
    )
    weather = pd.DataFrame(
        {
            "origin": np.tile(np.array(AIRPORTS, dtype=object), len(hours)),
            "observed_at": np.repeat(hours, len(AIRPORTS)),
            **{name: values.reshape(-1) for name, values in wx.items()},
        }
    )[list(WEATHER_COLUMNS)]
    return airports, weather


def file_frame(flights: pd.DataFrame) -> pd.DataFrame:
    """The flights frame as the source file has it: local times as naive text, every null as NULL_TOKEN."""
    out = flights.copy()
    for name in CANCELLED_NULLS:
        col = out[name]
        if name in ("departed_at", "arrived_at"):
            text = col.dt.strftime("%Y-%m-%dT%H:%M:%S")
        else:
            text = col.map(lambda v: f"{v:g}")
        out[name] = text.where(col.notna(), NULL_TOKEN).astype(object)
    return out


def output_paths(out: str | Path) -> dict[str, Path]:
    """Where the three files go: ``out`` is a directory (``flights.csv`` etc. in it) or the flights file (the
    tables beside it, with its suffix)."""
    path = Path(out)
    if path.suffix:
        return {name: path.with_name(f"{name}{path.suffix}") for name in ("airports", "weather")} | {"flights": path}
    return {name: path / f"{name}.csv" for name in ("flights", "airports", "weather")}


def write(data: FlightsData, out: str | Path, fmt: FileFormat | None = None) -> dict[str, Path]:
    """Write the flights file (NA tokens, local times) and the airports and weather tables; returns the paths."""
    paths = output_paths(out)
    frames = {"flights": file_frame(data.flights), "airports": data.airports, "weather": data.weather}
    for name, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_frame(frames[name], path, fmt or format_from_path(path))
    return paths
