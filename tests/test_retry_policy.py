"""Retry policies: the backoff formulas and their validation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import durable


def test_backoff_formulas() -> None:
    exponential = durable.Retry(backoff="exponential", base=2.0, max_backoff=timedelta(seconds=30))
    assert [exponential.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]
    linear = durable.Retry(backoff="linear", base=1.5)
    assert [linear.delay(n) for n in (1, 2, 3)] == [1.5, 3.0, 4.5]
    constant = durable.Retry(backoff="constant", base=7)
    assert [constant.delay(n) for n in (1, 5)] == [7, 7]


@given(st.integers(1, 10_000), st.floats(0, 100), st.sampled_from(["exponential", "linear", "constant"]))
def test_jittered_delay_stays_within_half_and_full_capped_delay(attempt: int, base: float, backoff: str) -> None:
    plain = durable.Retry(backoff=backoff, base=base, max_backoff=timedelta(minutes=10))  # type: ignore[arg-type]
    jittered = durable.Retry(backoff=backoff, base=base, max_backoff=timedelta(minutes=10), jitter=True)  # type: ignore[arg-type]
    full = plain.delay(attempt)
    assert 0 <= full <= 600
    assert full / 2 <= jittered.delay(attempt) <= full


def test_attempts_allowed() -> None:
    policy = durable.Retry(max_attempts=3)
    assert [policy.allows(n) for n in (1, 2, 3)] == [True, True, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"backoff": "fibonacci"}, "backoff"),
        ({"base": -1}, "base"),
    ],
)
def test_invalid_policies_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        durable.Retry(**kwargs)
