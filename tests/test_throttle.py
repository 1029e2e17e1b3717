"""Token buckets with a fake clock."""

import pytest

from imagehost.service.errors import RateLimited
from imagehost.service.throttle import RateLimit


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_empties_refills_and_says_when_to_retry():
    clock = Clock()
    limit = RateLimit(6, clock, "tries")  # one token every 10 s
    for _ in range(6):
        limit.hit("a")
    with pytest.raises(RateLimited) as caught:
        limit.hit("a")
    assert caught.value.retry_after == 10
    limit.hit("b")  # keys are independent
    clock.now += 10
    limit.hit("a")
    with pytest.raises(RateLimited):
        limit.hit("a")


def test_zero_disables_the_limit():
    limit = RateLimit(0, Clock(), "tries")
    for _ in range(1000):
        limit.hit("a")
