"""Seeded, vectorized card-transaction data with a learnable fraud signal and optional drift.

Why: every stage of the loop (contract checks, features, training, drift monitoring) needs realistic
input without shipping a data set; one seed reproduces the same frame on any machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from kfloop.demo.defects import DefectSpec, inject_defects

COLUMNS: dict[str, str] = {
    "transaction_id": "string",
    "customer_id": "string",
    "merchant_id": "string",
    "event_timestamp": "timestamp",
    "amount": "float64",
    "merchant_category": "string",
    "channel": "string",
    "distance_from_home_km": "float64",
    "hour_of_day": "int64",
    "is_fraud": "int64",
}
MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery", "restaurant", "gas_station", "retail", "electronics",
    "travel", "entertainment", "health", "digital_goods", "jewelry",
)  # fmt: skip
CHANNELS: tuple[str, ...] = ("pos", "online", "atm")
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_AMOUNT_SHIFT = 1.5
FRAUD_RATE = 0.018

# Per-category tables, in MERCHANT_CATEGORIES order.
_CATEGORY_BASE = (0.22, 0.16, 0.12, 0.15, 0.05, 0.04, 0.08, 0.08, 0.07, 0.03)
_CATEGORY_DRIFT_BOOST = (0.6, 0.8, 0.7, 1.0, 2.0, 0.5, 1.2, 1.0, 3.0, 1.0)
_FRAUD_CATEGORIES = (0.03, 0.03, 0.03, 0.10, 0.30, 0.20, 0.04, 0.03, 0.04, 0.20)
_CARD_TEST_CATEGORIES = (0, 0, 0, 0, 0, 0, 0.25, 0, 0.75, 0)
_AMOUNT_OFFSET = (0.0, -0.2, 0.0, 0.2, 1.2, 1.5, -0.1, 0.3, -0.8, 1.4)
_CHANNEL_BY_CATEGORY = (  # pos, online, atm
    (0.85, 0.12, 0.03), (0.90, 0.08, 0.02), (0.93, 0.02, 0.05), (0.70, 0.27, 0.03), (0.45, 0.53, 0.02),
    (0.25, 0.73, 0.02), (0.55, 0.43, 0.02), (0.85, 0.13, 0.02), (0.02, 0.97, 0.01), (0.80, 0.18, 0.02),
)  # fmt: skip
_FRAUD_CHANNEL = (0.15, 0.75, 0.10)
_HOUR_PROFILE = (
    0.6, 0.4, 0.3, 0.25, 0.25, 0.4, 0.9, 1.8, 2.8, 3.4, 3.8, 4.3,
    5.0, 4.8, 4.2, 4.0, 4.2, 4.8, 5.2, 5.0, 4.2, 3.2, 2.2, 1.2,
)  # fmt: skip
_US = 1_000_000
_HOUR_US = 3600 * _US
_DAY_US = 24 * _HOUR_US
_Cols = dict[str, np.ndarray]  # column name -> values, before the frame is built


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _micros(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@dataclass(frozen=True)
class DriftSpec:
    """What changes from ``after`` on: amounts scale, category mix, and/or the fraud pattern."""

    after: datetime
    amount_shift: float = 1.0
    category_mix: bool = False
    fraud_pattern: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "after", _utc(self.after, "drift after"))
        if not (math.isfinite(self.amount_shift) and self.amount_shift > 0):
            raise ValueError(f"drift amount_shift={self.amount_shift!r} must be a positive number")

    @classmethod
    def parse(cls, text: str) -> DriftSpec:
        """Parse ``"amounts[=FACTOR],categories,fraud@DATE"`` (any non-empty subset of the kinds)."""
        usage = "expected KIND[,KIND...]@DATE with KIND in amounts[=FACTOR], categories, fraud"
        kinds, sep, when = text.partition("@")
        if not sep or not when.strip() or "@" in when:
            raise ValueError(f"drift {text!r}: {usage}, e.g. 'amounts,categories,fraud@2026-03-01'")
        try:
            after = datetime.fromisoformat(when.strip())
        except ValueError as err:
            raise ValueError(f"drift {text!r}: bad date {when.strip()!r} (want ISO-8601, e.g. 2026-03-01)") from err
        options: dict[str, object] = {}
        for part in (p.strip() for p in kinds.split(",")):
            name, eq, value = part.partition("=")
            if name == "amounts" and "amount_shift" not in options:
                try:
                    options["amount_shift"] = float(value) if eq else DEFAULT_AMOUNT_SHIFT
                except ValueError as err:
                    raise ValueError(f"drift {text!r}: amount factor {value!r} is not a number") from err
            elif part == "categories" and "category_mix" not in options:
                options["category_mix"] = True
            elif part == "fraud" and "fraud_pattern" not in options:
                options["fraud_pattern"] = True
            else:
                raise ValueError(f"drift {text!r}: unknown or repeated part {part!r} ({usage})")
        return cls(after=after, **options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DemoSpec:
    """Everything that determines a generated frame; equal specs give identical frames."""

    rows: int
    seed: int = 42
    start: datetime = DEFAULT_START
    days: int = 90
    customers: int | None = None
    merchants: int | None = None
    drift: DriftSpec | None = None
    defects: DefectSpec = field(default_factory=DefectSpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _utc(self.start, "start"))
        if self.rows < 1 or self.days < 1:
            raise ValueError(f"rows ({self.rows}) and days ({self.days}) must be >= 1")
        if self.customers is not None and self.customers < 1:
            raise ValueError(f"customers ({self.customers}) must be >= 1")
        if self.merchants is not None and self.merchants < len(MERCHANT_CATEGORIES):
            raise ValueError(f"merchants ({self.merchants}) must be >= {len(MERCHANT_CATEGORIES)} (one per category)")

    @property
    def n_customers(self) -> int:
        return self.customers if self.customers is not None else max(10, self.rows // 50)

    @property
    def n_merchants(self) -> int:
        return self.merchants if self.merchants is not None else max(10, self.rows // 200)


@dataclass(frozen=True)
class GeneratedData:
    """The frame plus ground truth: defect kind → transaction_ids it affected."""

    frame: pd.DataFrame
    injected: dict[str, list[str]]


@dataclass(frozen=True)
class _World:
    """Entity profiles: customers' habits and merchants' categories."""

    amount_mu: np.ndarray  # log of each customer's typical amount
    usual_hour: np.ndarray
    home_radius: np.ndarray  # km
    prefs: np.ndarray  # customers x categories
    activity: np.ndarray  # share of all transactions
    merchant_order: np.ndarray  # merchant indices sorted by category
    cat_offset: np.ndarray
    cat_count: np.ndarray


def _world(rng: np.random.Generator, customers: int, merchants: int) -> _World:
    k = len(MERCHANT_CATEGORIES)
    m_cat = np.concatenate([np.arange(k), rng.choice(k, merchants - k, p=np.array(_CATEGORY_BASE))])
    counts = np.bincount(m_cat, minlength=k)
    activity = rng.gamma(2.0, 1.0, customers)
    return _World(
        amount_mu=rng.normal(3.3, 0.5, customers),
        usual_hour=np.clip(rng.normal(14.0, 3.5, customers), 6, 22),
        home_radius=rng.lognormal(math.log(5.0), 0.5, customers),
        prefs=rng.dirichlet(np.array(_CATEGORY_BASE) * 6.0, customers),
        activity=activity / activity.sum(),
        merchant_order=np.argsort(m_cat, kind="stable"),
        cat_offset=np.cumsum(counts) - counts,
        cat_count=counts,
    )


def _sample_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One index per row of an (n x k) weight matrix, vectorized inverse-CDF sampling."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), weights.shape[1] - 1)


def _pick_merchant(rng: np.random.Generator, w: _World, cat: np.ndarray) -> np.ndarray:
    u = rng.random(len(cat)) ** 1.6  # a few popular merchants per category
    return w.merchant_order[w.cat_offset[cat] + (u * w.cat_count[cat]).astype(np.int64)]


class _Clock:
    """Maps (day, hour) draws onto the span [start, start + days) in epoch microseconds."""

    def __init__(self, spec: DemoSpec) -> None:
        self.start = _micros(spec.start)
        self.base = self.start - self.start % _DAY_US  # UTC midnight of the first day
        self.span = spec.days * _DAY_US
        weekday = (np.arange(spec.days) + spec.start.weekday()) % 7
        weights = np.where(weekday >= 5, 1.15, 1.0)
        self.day_p = weights / weights.sum()

    def wrap(self, us: np.ndarray) -> np.ndarray:
        return self.start + (us - self.start) % self.span

    def at_hours(self, rng: np.random.Generator, hour: np.ndarray) -> np.ndarray:
        day = rng.choice(len(self.day_p), len(hour), p=self.day_p)
        return self.wrap(self.base + day * _DAY_US + hour * _HOUR_US + rng.integers(0, _HOUR_US, len(hour)))


def _profile_hours(rng: np.random.Generator, n: int) -> np.ndarray:
    p = np.array(_HOUR_PROFILE)
    return rng.choice(24, n, p=p / p.sum())


def _legit(rng: np.random.Generator, w: _World, clock: _Clock, drift: DriftSpec | None, n: int) -> _Cols:
    cust = rng.choice(len(w.activity), n, p=w.activity)
    habitual = np.rint(w.usual_hour[cust] + rng.normal(0.0, 2.5, n)).astype(np.int64) % 24
    ts = clock.at_hours(rng, np.where(rng.random(n) < 0.6, habitual, _profile_hours(rng, n)))
    weights = w.prefs[cust]
    if drift is not None and drift.category_mix:
        shifted = ts >= _micros(drift.after)
        weights[shifted] *= np.array(_CATEGORY_DRIFT_BOOST)
    cat = _sample_rows(rng, weights)
    log_amount = w.amount_mu[cust] + np.array(_AMOUNT_OFFSET)[cat] + rng.normal(0.0, 0.6, n)
    travel = rng.random(n) < 0.03
    distance = np.where(travel, rng.lognormal(math.log(250.0), 0.8, n), rng.exponential(w.home_radius[cust]))
    channel = _sample_rows(rng, np.array(_CHANNEL_BY_CATEGORY)[cat])
    return {"cust": cust, "ts": ts, "cat": cat, "channel": channel, "amount": np.exp(log_amount), "distance": distance}


def _fraud(rng: np.random.Generator, w: _World, clock: _Clock, drift: DriftSpec | None, n: int) -> _Cols:
    """Fraud comes in bursts on a compromised card: n rows spread over incidents of a few rows each."""
    ts0 = clock.at_hours(rng, _profile_hours(rng, n))  # candidate incidents (at most n are needed)
    card_test = ts0 >= _micros(drift.after) if drift is not None and drift.fraud_pattern else np.zeros(n, bool)
    night = ~card_test & (rng.random(n) < 0.45)
    night_ts = ts0 - ts0 % _DAY_US + rng.integers(0, 6 * _HOUR_US, n)
    ts0 = clock.wrap(np.where(night, night_ts, ts0))
    sizes = np.where(card_test, 4 + rng.poisson(6.0, n), 1 + rng.poisson(1.5, n))
    ends = np.cumsum(sizes)
    m = int(np.searchsorted(ends, n)) + 1 if n else 0
    inc = np.repeat(np.arange(m), sizes[:m])[:n]
    test = card_test[inc]
    gaps = np.cumsum(rng.exponential(np.where(test, 40.0, 240.0) * _US, n).astype(np.int64))
    first = (ends - sizes)[inc]
    offset = gaps - gaps[first]
    ts = clock.wrap(ts0[inc] + offset)
    cust = rng.integers(0, len(w.activity), m)[inc]
    cat = np.where(test, _sample_rows(rng, np.tile(_CARD_TEST_CATEGORIES, (n, 1))),
                   _sample_rows(rng, np.tile(_FRAUD_CATEGORIES, (n, 1))))  # fmt: skip
    boost = np.where(rng.random(n) < 0.7, rng.normal(1.6, 0.6, n), rng.normal(0.0, 0.6, n))
    amount = np.exp(w.amount_mu[cust] + np.array(_AMOUNT_OFFSET)[cat] + boost)
    amount = np.where(test, rng.uniform(0.5, 5.0, n), amount)
    remote = ~test & (rng.random(n) < 0.45)
    distance = np.where(remote, rng.lognormal(math.log(600.0), 0.9, n), rng.exponential(w.home_radius[cust] * 2))
    channel = np.where(rng.random(n) < 0.6, _sample_rows(rng, np.tile(_FRAUD_CHANNEL, (n, 1))),
                       _sample_rows(rng, np.array(_CHANNEL_BY_CATEGORY)[cat]))  # fmt: skip
    channel = np.where(test, np.where(rng.random(n) < 0.95, 1, 0), channel)
    return {"cust": cust, "ts": ts, "cat": cat, "channel": channel, "amount": amount, "distance": distance}


def _ids(prefix: str, count: int, width: int, first: int = 0) -> np.ndarray:
    return np.array([f"{prefix}{i:0{width}d}" for i in range(first, first + count)], dtype=object)


def generate(spec: DemoSpec) -> GeneratedData:
    """Build the frame for ``spec``: clean rows sorted by event time, then the requested defects."""
    rng = np.random.default_rng(spec.seed)
    w = _world(rng, spec.n_customers, spec.n_merchants)
    clock = _Clock(spec)
    n_fraud = min(int(rng.binomial(spec.rows, FRAUD_RATE)), spec.rows)
    parts = [_legit(rng, w, clock, spec.drift, spec.rows - n_fraud), _fraud(rng, w, clock, spec.drift, n_fraud)]
    col = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    label = np.repeat(np.array([0, 1], dtype=np.int64), [spec.rows - n_fraud, n_fraud])
    merchant = _pick_merchant(rng, w, col["cat"])
    amount = col["amount"]
    if spec.drift is not None and spec.drift.amount_shift != 1.0:
        amount = np.where(col["ts"] >= _micros(spec.drift.after), amount * spec.drift.amount_shift, amount)
    atm = col["channel"] == CHANNELS.index("atm")
    amount = np.where(atm, np.maximum(20.0, np.round(amount / 20.0) * 20.0), np.maximum(0.5, np.round(amount, 2)))
    order = np.argsort(col["ts"], kind="stable")
    ts = col["ts"][order]
    frame = pd.DataFrame(
        {
            "transaction_id": _ids("tx-", spec.rows, 9, first=1),
            "customer_id": _ids("c-", spec.n_customers, 5)[col["cust"][order]],
            "merchant_id": _ids("m-", spec.n_merchants, 4)[merchant[order]],
            "event_timestamp": pd.to_datetime(ts * 1000, utc=True),
            "amount": amount[order],
            "merchant_category": np.array(MERCHANT_CATEGORIES, dtype=object)[col["cat"][order]],
            "channel": np.array(CHANNELS, dtype=object)[col["channel"][order]],
            "distance_from_home_km": np.round(col["distance"][order], 2),
            "hour_of_day": (ts // _HOUR_US) % 24,
            "is_fraud": label[order],
        }
    )
    frame, injected = inject_defects(frame, spec.defects, np.random.default_rng([spec.seed, 1]))
    return GeneratedData(frame=frame, injected=injected)
