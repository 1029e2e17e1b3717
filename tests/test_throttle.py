"""Token buckets in the database (SQLite and PostgreSQL), with the clock passed in."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from imagehost.db import create_engine, ping, run_sync, upgrade
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


def allowed(wait: float) -> bool:
    """What RateLimit.hit lets through: no wait at all."""
    return wait <= 0


def tokens_left(engine, key: str) -> float:
    def read(conn):
        return conn.execute(sa.select(rate_buckets.c.tokens)
                            .where(rate_buckets.c.key == key)).scalar_one()

    return run_sync(engine, read)


def test_concurrent_spenders_never_take_more_than_the_bucket_holds(engine):
    # Many processes hitting one new key at once: the first insert wins, the others
    # take from the row it created; exactly five are let through.
    spenders = 20
    start = threading.Barrier(spenders)

    def spend_at_once(_):
        start.wait()
        return spend(engine, "burst", 5000.0, per_minute=5)

    with ThreadPoolExecutor(spenders) as pool:
        waits = list(pool.map(spend_at_once, range(spenders)))
    assert sum(map(allowed, waits)) == 5
    assert tokens_left(engine, "burst") == pytest.approx(0.0)


@pytest.mark.parametrize("statement", [1, 2, 3])
def test_spenders_that_get_in_between_two_statements_of_another_take_nothing_twice(
        engine, tmp_path, database_url, statement):
    # One spender's transaction is paused after its first, second or third statement
    # while four others spend one after another (on PostgreSQL they pass it: READ
    # COMMITTED takes a new snapshot per statement; SQLite makes them wait for its write
    # lock). Whatever they did meanwhile, the five tokens of the new bucket are handed
    # out once each.
    url = database_url or f"sqlite:///{tmp_path / 'limits.db'}"
    others_engine, paused_engine = create_engine(url), create_engine(url)
    run_sync(paused_engine, ping)  # connected: from here on, only spend_token's statements
    others: list[float] = []
    others_thread = threading.Thread(target=lambda: others.extend(
        spend(others_engine, "race", 5000.0, per_minute=5) for _ in range(4)))
    statements = iter(range(statement - 1, -1, -1))

    def let_the_others_in(*_):
        if next(statements, None) == 0:
            others_thread.start()
            others_thread.join(timeout=1.0)  # on a lock they wait for this transaction

    sa.event.listen(paused_engine, "after_cursor_execute", let_the_others_in)
    try:
        paused = spend(paused_engine, "race", 5000.0, per_minute=5)
        others_thread.join(timeout=60)
        later = [spend(engine, "race", 5000.0, per_minute=5) for _ in range(2)]
    finally:
        paused_engine.dispose()
        others_engine.dispose()
    assert len(others) == 4
    assert sum(map(allowed, [paused, *others, *later])) == 5
    assert not allowed(later[-1])


# -- PostgreSQL: deadlocks and serialization failures run the transaction again ----------


@pytest.fixture
def pg_engine(postgres):
    with postgres.database() as url:
        engine = create_engine(url)
        upgrade(engine)
        yield engine
        engine.dispose()


def _add_tokens(conn, key: str) -> None:
    conn.execute(rate_buckets.update().where(rate_buckets.c.key == key)
                 .values(tokens=rate_buckets.c.tokens + 1))


def test_a_deadlock_victim_runs_again_and_both_transactions_commit(pg_engine):
    for key in ("a", "b"):
        spend(pg_engine, key, 1000.0)  # 5 tokens left in each
    each_holds_its_first_row = threading.Barrier(2, timeout=10)
    attempts = {"a": 0, "b": 0}

    def add_to_both(conn, first: str, second: str) -> None:
        attempts[first] += 1
        _add_tokens(conn, first)
        if attempts[first] == 1:  # the first time, each waits for the other's row: a
            each_holds_its_first_row.wait()  # real deadlock, which PostgreSQL breaks
        _add_tokens(conn, second)

    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(run_sync, pg_engine, add_to_both, "a", "b"),
                pool.submit(run_sync, pg_engine, add_to_both, "b", "a")]
        for run in runs:
            run.result(timeout=60)  # neither raised the deadlock (40P01)
    assert sorted(attempts.values()) == [1, 2]  # the victim ran once more
    assert tokens_left(pg_engine, "a") == tokens_left(pg_engine, "b") == pytest.approx(7.0)


@pytest.mark.parametrize(("sqlstate", "runs"), [("40001", 5), ("40P01", 5), ("23505", 1)])
def test_only_failures_worth_another_try_are_retried_and_only_a_few_times(
        pg_engine, sqlstate, runs):
    attempts = []

    def fail(conn) -> None:
        attempts.append(1)
        conn.execute(sa.text(f"DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = "
                             f"'{sqlstate}'; END $$"))

    with pytest.raises(sa.exc.DBAPIError) as raised:
        run_sync(pg_engine, fail)
    assert raised.value.orig.sqlstate == sqlstate
    assert len(attempts) == runs


def test_a_new_bucket_does_not_wait_for_old_ones_another_transaction_holds(pg_engine):
    spend(pg_engine, "old", 1000.0)

    def keys(conn):
        return sorted(conn.execute(sa.select(rate_buckets.c.key)).scalars())

    def create_without_waiting(conn) -> float:
        conn.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
        return spend_token(conn, "tries", "new", 6.0, 0.1, 1061.0)

    with pg_engine.connect() as other, other.begin():
        other.execute(sa.select(rate_buckets).where(rate_buckets.c.key == "old")
                      .with_for_update())
        # "old" is full again and would be dropped, but this transaction holds it: the
        # clean-up skips it instead of waiting (or deadlocking with another creator).
        assert run_sync(pg_engine, create_without_waiting) == 0.0
    assert run_sync(pg_engine, keys) == ["new", "old"]
    spend(pg_engine, "newer", 1062.0)  # the next new bucket drops it
    assert run_sync(pg_engine, keys) == ["new", "newer"]
