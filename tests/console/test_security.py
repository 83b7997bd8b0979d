"""Sessions and the login rate limit, on a clock the test moves."""

from __future__ import annotations

from ics_sms.console.security import LoginLimiter, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_after_its_lifetime() -> None:
    clock = Clock()
    sessions = Sessions(60.0, secure=True, clock=clock)
    sid, session = sessions.new()
    assert sessions.get(sid) is session
    clock.now += 61
    assert sessions.get(sid) is None
    assert sessions.get("forged") is None


def test_every_session_has_its_own_csrf_token() -> None:
    sessions = Sessions(60.0, secure=False)
    (_, one), (_, two) = sessions.new(), sessions.new()
    assert one.csrf != two.csrf
    assert len(one.csrf) >= 32


def test_logins_are_limited_per_key_until_the_period_passes() -> None:
    clock = Clock()
    limiter = LoginLimiter(attempts=3, period_s=300, clock=clock)
    for _ in range(3):
        assert limiter.retry_after_s("address:a", "account:ada") == 0
        limiter.failed("address:a", "account:ada")
    assert limiter.retry_after_s("address:b", "account:ada") == 300  # the account too
    assert limiter.retry_after_s("address:a", "account:bob") == 300  # the address too
    assert limiter.retry_after_s("address:b", "account:bob") == 0
    clock.now += 301
    assert limiter.retry_after_s("address:a", "account:ada") == 0


def test_a_success_clears_the_failures() -> None:
    limiter = LoginLimiter(attempts=2, period_s=300)
    limiter.failed("account:ada")
    limiter.succeeded("account:ada")
    limiter.failed("account:ada")
    assert limiter.retry_after_s("account:ada") == 0
