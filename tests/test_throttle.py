"""Token buckets in the database (SQLite and PostgreSQL), with the clock passed in."""

import pytest
import sqlalchemy as sa

from imagehost.db import create_engine, run_sync, upgrade
from imagehost.db.schema import rate_buckets
from imagehost.db.throttle import spend_token


@pytest.fixture
def engine(tmp_path, database_url):
    engine = create_engine(database_url or f"sqlite:///{tmp_path / 'limits.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def spend(engine, key: str, now: float, per_minute: int = 6, name: str = "tries") -> float:
    return run_sync(engine, spend_token, name, key, float(per_minute), per_minute / 60, now)


def test_bucket_empties_refills_and_says_when_to_retry(engine):
    # Six a minute: one token every 10 s.
    assert [spend(engine, "a", 1000.0) for _ in range(6)] == [0.0] * 6
    assert spend(engine, "a", 1000.0) == pytest.approx(10.0)
    assert spend(engine, "a", 1004.0) == pytest.approx(6.0)
    assert spend(engine, "b", 1004.0) == 0.0  # keys are independent
    assert spend(engine, "a", 1004.0, name="other") == 0.0  # and so are limits
    assert spend(engine, "a", 1010.0) == 0.0
    assert spend(engine, "a", 1010.0) > 0
    assert [spend(engine, "a", 2000.0) for _ in range(7)][-2:] == [0.0, pytest.approx(10.0)]


def test_buckets_full_again_are_forgotten_when_new_ones_come(engine):
    spend(engine, "old", 1000.0)
    spend(engine, "recent", 1055.0)
    spend(engine, "new", 1061.0)  # "old" refilled completely after 60 s

    def keys(conn):
        return sorted(conn.execute(sa.select(rate_buckets.c.key)).scalars())

    assert run_sync(engine, keys) == ["new", "recent"]


def test_concurrent_spenders_never_take_more_than_the_bucket_holds(engine):
    from concurrent.futures import ThreadPoolExecutor

    # Many processes hitting one new key at once: the first insert wins, the others
    # take from the row it created; exactly five tokens are spent.
    with ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda _: spend(engine, "burst", 5000.0, per_minute=5),
                              range(20)))
    assert waits.count(0.0) == 5
