"""CPU rates over scrape windows, as `kubectl top` reads them from the sandbox."""

from __future__ import annotations

from pipeline.sandbox.kube.metrics import _Rates


def test_the_first_reading_is_a_rate_since_the_start_given() -> None:
    rates = _Rates()
    assert rates.rate("c", now=12.0, used_s=3.0, since=(10.0, 0.0)) == (1.5, 2.0)


def test_later_readings_are_rates_since_the_last_one_a_second_old() -> None:
    rates = _Rates()
    rates.rate("c", now=10.0, used_s=5.0, since=(0.0, 0.0))
    assert rates.rate("c", now=10.5, used_s=5.5, since=(0.0, 0.0)) == (1.0, 0.5)  # kept: 10.0
    assert rates.rate("c", now=12.0, used_s=5.5, since=(0.0, 0.0)) == (0.25, 2.0)  # now 12.0
    assert rates.rate("c", now=14.0, used_s=5.5, since=(0.0, 0.0)) == (0.0, 2.0)


def test_what_ended_is_forgotten_and_starts_again_from_its_start() -> None:
    rates = _Rates()
    rates.rate("a", now=10.0, used_s=5.0, since=(0.0, 0.0))
    rates.rate("b", now=10.0, used_s=1.0, since=(0.0, 0.0))
    rates.keep_only({"b"})
    assert rates.rate("a", now=20.0, used_s=8.0, since=(16.0, 0.0)) == (2.0, 4.0)
    assert rates.rate("b", now=20.0, used_s=2.0, since=(16.0, 0.0)) == (0.1, 10.0)
