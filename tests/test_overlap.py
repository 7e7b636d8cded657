"""overlap.py: reading ahead and writing behind really run beside the caller, keep order, and
re-raise background errors in the caller."""
import threading

import pytest

from deeplab_load.overlap import WriteBehind, read_ahead


def test_read_ahead_produces_the_next_item_while_the_caller_holds_the_current():
    produced = [threading.Event() for _ in range(3)]

    def items():
        for i in range(3):
            yield i
            produced[i].set()

    stream = read_ahead(items())
    assert next(stream) == 0
    # the caller has not asked for item 1, yet the producer has gone past item 0
    assert produced[0].wait(timeout=10)
    assert list(stream) == [1, 2]


def test_read_ahead_keeps_order_and_raises_the_producers_error_at_its_position():
    def items():
        yield from range(5)
        raise ValueError("bad batch 5")

    got = []
    with pytest.raises(ValueError, match="bad batch 5"):
        for item in read_ahead(items(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_read_ahead_stops_its_producer_when_the_caller_stops_early():
    pulled = []

    def items():
        for i in range(10 ** 6):
            pulled.append(i)
            yield i

    stream = read_ahead(items(), depth=1)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    count = len(pulled)
    assert count <= 6
    assert not [t for t in threading.enumerate() if t.name == "read_ahead"]


def test_write_behind_returns_before_the_job_finishes_and_runs_jobs_in_order():
    release = threading.Event()
    order, threads = [], []

    def job(i):
        if i == 0:
            assert release.wait(timeout=10), "submit waited for the job: nothing overlapped"
        threads.append(threading.current_thread().name)
        order.append(i)

    with WriteBehind(max_pending=4) as writer:
        for i in range(4):
            writer.submit(job, i)
        release.set()                       # only reachable if submit did not block on job 0
    assert order == [0, 1, 2, 3]
    assert all(name.startswith("write_behind") for name in threads)


def test_write_behind_bounds_pending_jobs_and_counts_finished_ones():
    running = threading.Semaphore(0)
    with WriteBehind(max_pending=2) as writer:
        for i in range(5):
            writer.submit(running.release)
            assert len(writer._pending) <= 2
        finished = writer.finished() + writer.wait()
    assert finished <= 5
    assert sum(1 for _ in range(5) if running.acquire(timeout=1)) == 5


def test_write_behind_raises_a_job_error_in_the_caller():
    def job(i):
        if i == 1:
            raise OSError(f"disk full writing {i}")

    with pytest.raises(OSError, match="disk full writing 1"):
        with WriteBehind(max_pending=1) as writer:
            for i in range(4):
                writer.submit(job, i)


def test_disabled_overlap_does_the_same_work_inline():
    threads = []

    def job(i):
        threads.append(threading.current_thread().name)

    with WriteBehind(enabled=False) as writer:
        writer.submit(job, 0)
        writer.submit(job, 1)
        assert writer.finished() == 2            # done inside submit
    assert threads == [threading.current_thread().name] * 2
    assert list(read_ahead(iter(range(4)), enabled=False)) == [0, 1, 2, 3]
