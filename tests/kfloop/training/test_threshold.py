"""Threshold policies of a binary model, on small hand-made validation scores: a recall or precision
target, the best F-beta, and the least expected cost; each is checked against a brute-force scan."""

from __future__ import annotations

import numpy as np
import pytest

from kfloop.config import ThresholdTarget
from kfloop.training.metrics import choose_threshold

RNG = np.random.default_rng(3)
Y = (RNG.random(400) < 0.2).astype(int)
P = np.clip(0.35 * Y + RNG.random(400) * 0.65, 0, 1)


def _confusion(threshold: float) -> tuple[int, int, int]:
    pred = np.greater_equal(P, threshold)
    return int((pred & (Y == 1)).sum()), int((pred & (Y == 0)).sum()), int((~pred & (Y == 1)).sum())


def _scan(score) -> float:
    """The best value of ``score(tp, fp, fn)`` over every distinct threshold (and one above all scores)."""
    return max(score(*_confusion(t)) for t in [*np.unique(P), np.nextafter(P.max(), 2)])


def test_f_beta_picks_the_best_f_beta() -> None:
    for beta in (0.5, 1.0, 3.0):

        def f(tp: int, fp: int, fn: int, b2: float = beta**2) -> float:
            return (1 + b2) * tp / max((1 + b2) * tp + b2 * fn + fp, 1)

        t = choose_threshold(Y, P, ThresholdTarget(metric="f_beta", beta=beta))
        assert f(*_confusion(t)) == pytest.approx(_scan(f))
    low = choose_threshold(Y, P, ThresholdTarget(metric="f_beta", beta=0.3))
    high = choose_threshold(Y, P, ThresholdTarget(metric="f_beta", beta=5.0))
    assert high < low  # more weight on recall: a lower threshold


@pytest.mark.parametrize(("cost_fp", "cost_fn"), [(1.0, 1.0), (1.0, 20.0), (5.0, 1.0), (1.0, 0.0)])
def test_cost_picks_the_least_expected_cost(cost_fp: float, cost_fn: float) -> None:
    def neg_cost(tp: int, fp: int, fn: int) -> float:
        return -(cost_fp * fp + cost_fn * fn)

    t = choose_threshold(Y, P, ThresholdTarget(metric="cost", cost_fp=cost_fp, cost_fn=cost_fn))
    assert neg_cost(*_confusion(t)) == pytest.approx(_scan(neg_cost))
    if cost_fn == 0:  # misses cost nothing: flag nothing
        assert not np.greater_equal(P, t).any()


def test_recall_target_is_unchanged_and_a_costless_policy_is_refused() -> None:
    t = choose_threshold(Y, P, ThresholdTarget(metric="recall", target=0.8))
    tp, _, fn = _confusion(t)
    assert tp / (tp + fn) >= 0.8
    with pytest.raises(ValueError, match="both 0"):
        ThresholdTarget(metric="cost", cost_fp=0, cost_fn=0)
