"""The dispatcher's registration gate (issue 18): a bounded number of registrations at once, and
retry-afters that spread a herd of session opens at the rate registrations complete."""

from __future__ import annotations

import itertools

import pytest
from shoal.manager.sessiongate import INITIAL_COST, JITTER, MIN_DELAY, RegistrationGate

LIMIT = 4


def gate(*, now: list[float], rng: float = 0.0, max_delay: float = 5.0) -> RegistrationGate:
    return RegistrationGate(LIMIT, max_delay=lambda: max_delay, clock=lambda: now[0], rng=lambda: rng)


def test_opens_beyond_the_limit_are_turned_away_and_a_slot_given_back_admits_one() -> None:
    registrations = gate(now=[0.0])
    assert [registrations.enter() for _ in range(LIMIT + 3)] == [True] * LIMIT + [False] * 3
    assert (registrations.served, registrations.turned_away, registrations.peak) == (LIMIT, 3, LIMIT)
    registrations.leave(0.1)
    assert registrations.enter() and not registrations.enter()
    assert registrations.in_flight == LIMIT and registrations.peak == LIMIT


def test_a_herd_is_given_places_at_the_rate_registrations_complete() -> None:
    now = [100.0]
    registrations = gate(now=now)
    delays = [registrations.retry_after() for _ in range(40)]
    spacing = INITIAL_COST / LIMIT
    assert delays[0] == pytest.approx(MIN_DELAY)
    for earlier, later in itertools.pairwise(delays):
        assert abs(later - earlier - spacing) < 1e-9, delays
    # Registrations got slower: the places that follow are further apart.
    for _ in range(50):
        registrations.leave(1.0)
    before = registrations.retry_after()
    assert registrations.retry_after() - before > 4 * spacing
    # Once the queue has passed, a newcomer waits the shortest delay again.
    now[0] += 60
    assert registrations.retry_after() == pytest.approx(MIN_DELAY)


def test_retry_afters_have_jitter_and_never_exceed_the_longest_delay() -> None:
    now = [0.0]
    jittered = gate(now=now, rng=1.0)
    assert jittered.retry_after() == pytest.approx(MIN_DELAY * (1 + JITTER))
    capped = gate(now=now, max_delay=1.0)
    assert max(capped.retry_after() for _ in range(1000)) <= 1.0
