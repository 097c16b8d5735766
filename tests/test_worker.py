"""The background worker: one shared pool of threads, one lane per owner (no TensorFlow).

No test asserts on a duration: waits are on events, and a loop that waits for threads
to end has a generous deadline only so that a broken pool cannot hang the suite.
"""

from __future__ import annotations

import threading
import time

import pytest

from cvml_core.artifacts import worker as worker_module
from cvml_core.artifacts.worker import BackgroundJobError, BackgroundWorker

DEADLINE = 60.0  # only so that a broken pool fails instead of hanging


@pytest.fixture
def pool(monkeypatch):
    """A fresh shared pool whose threads end after 0.05 s idle, for this test only."""
    fresh = worker_module._Pool(size=worker_module.POOL_SIZE, idle_seconds=0.05)
    monkeypatch.setattr(worker_module, "_POOL", fresh)
    yield fresh
    _wait_until(lambda: fresh.threads == 0)


def _wait_until(condition):
    end = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < end, "the condition never held"
        time.sleep(0.01)


# -- one lane ------------------------------------------------------------------------


def test_worker_runs_jobs_in_order_one_at_a_time():
    worker = BackgroundWorker()
    running = []
    overlaps = []
    lock = threading.Lock()

    def job(i):
        def run():
            with lock:
                running.append(i)
                if len(running) > 1:
                    overlaps.append(list(running))
            threading.Event().wait(0.01)
            with lock:
                running.remove(i)
            return i

        return run

    for i in range(5):
        worker.submit(f"job{i}", job(i))
    worker.wait()
    assert worker.drain() == [0, 1, 2, 3, 4]
    assert overlaps == []


def test_a_newer_job_supersedes_the_waiting_one():
    worker = BackgroundWorker()
    release = threading.Event()
    started = threading.Event()

    def blocker():
        started.set()
        release.wait()
        return "first"

    worker.submit("first", blocker)
    started.wait()
    worker.submit("second", lambda: "second", supersede=True)
    worker.submit("third", lambda: "third", supersede=True)
    release.set()
    worker.wait()
    assert worker.drain() == ["first", "third"]
    assert worker.superseded == ["second"]


def test_a_job_that_is_not_replaceable_is_never_dropped():
    worker = BackgroundWorker()
    release, started = threading.Event(), threading.Event()
    worker.submit("first", lambda: started.set() or release.wait() and "first")
    started.wait()
    worker.submit("events", lambda: "events")  # waits; not replaceable
    submitted = threading.Event()

    def submit_save():
        worker.submit("save", lambda: "save", supersede=True)  # waits for room
        submitted.set()

    saver = threading.Thread(target=submit_save)
    saver.start()
    release.set()
    saver.join()
    worker.wait()
    assert submitted.is_set() and worker.superseded == []
    assert worker.drain() == ["first", "events", "save"]


def test_a_background_failure_is_raised_on_the_calling_thread():
    worker = BackgroundWorker()

    def fails():
        raise PermissionError("read-only file system")

    worker.submit("save epoch 3", fails)
    with pytest.raises(BackgroundJobError, match="save epoch 3.*read-only") as info:
        worker.wait()
    assert isinstance(info.value.__cause__, PermissionError)
    worker.wait()  # reported once
    worker.submit("next", lambda: "ok")
    worker.wait()
    assert worker.drain() == ["ok"]


def test_a_failure_is_raised_by_the_next_submit_and_kept_until_then():
    worker = BackgroundWorker()
    worker.submit("write events", lambda: 1 / 0)
    assert worker.wait(raise_error=False) is True  # kept, not raised, not dropped
    with pytest.raises(BackgroundJobError, match="write events.*ZeroDivisionError"):
        worker.submit("next", lambda: None)
    worker.raise_if_failed()  # reported once


def test_every_background_failure_is_named():
    worker = BackgroundWorker()
    release = threading.Event()

    def fails(name, wait=False):
        def run():
            if wait:
                release.wait()
            raise OSError(f"{name} broke")

        return run

    worker.submit("save epoch 2", fails("save epoch 2", wait=True))
    worker.submit("save epoch 3", fails("save epoch 3"))  # waits behind the first
    release.set()
    with pytest.raises(BackgroundJobError) as info:
        worker.wait()
    assert "save epoch 2 broke" in str(info.value) and "save epoch 3 broke" in str(info.value)


def test_a_lane_without_backlog_limit_keeps_every_job_in_order_and_never_blocks():
    """A notifier's lane: start card, then end card, whatever the first one takes."""
    lane = BackgroundWorker("teams", backlog=None)
    release, started = threading.Event(), threading.Event()
    lane.submit("start card", lambda: started.set() or release.wait() and "start")
    started.wait()
    for i in range(5):  # would block on a backlog-1 lane: returns at once here
        lane.submit(f"card {i}", lambda i=i: i)
    assert lane.busy and lane.wait(raise_error=False, timeout=0.01) is False
    release.set()
    assert lane.wait() is True and not lane.busy
    assert lane.drain() == ["start", 0, 1, 2, 3, 4]


@pytest.mark.parametrize("backlog", [0, -1, 1.5, True, "1"])
def test_a_bad_backlog_is_refused(backlog):
    with pytest.raises(ValueError, match=f"Received: backlog={backlog!r}"):
        BackgroundWorker(backlog=backlog)


# -- the shared pool -----------------------------------------------------------------


def test_lanes_run_side_by_side_on_the_shared_pool_threads(pool):
    release = threading.Event()
    names = {}
    both = threading.Barrier(2, timeout=DEADLINE)

    def job(owner):
        def run():
            names[owner] = threading.current_thread().name
            both.wait()  # returns only when both lanes' jobs run at the same time
            release.wait()
            return owner

        return run

    ckpt, tb = BackgroundWorker("cvml-ckpt"), BackgroundWorker("cvml-tb")
    try:
        ckpt.submit("save", job("ckpt"))
        tb.submit("events", job("tb"))
        _wait_until(lambda: len(names) == 2)
    finally:
        release.set()
    assert set(names.values()) == {"cvml-worker-1", "cvml-worker-2"}
    ckpt.wait()
    tb.wait()
    assert ckpt.drain() == ["ckpt"] and tb.drain() == ["tb"]


def test_by_default_no_lane_waits_for_a_thread(pool):
    """Six lanes (more than ckpt, tb, tflite and a notifier) each hold a pool thread
    with a job that blocks: every job runs at once."""
    lanes = [BackgroundWorker(f"lane {i}") for i in range(6)]
    release = threading.Event()
    started = threading.Semaphore(0)

    def job(i):
        def run():
            started.release()
            release.wait()
            return i

        return run

    try:
        for i, lane in enumerate(lanes):
            lane.submit(f"job {i}", job(i))
        for _ in lanes:
            assert started.acquire(timeout=DEADLINE)
        assert pool.threads == len(lanes)
    finally:
        release.set()
    for i, lane in enumerate(lanes):
        lane.wait()
        assert lane.drain() == [i]


def test_a_capped_pool_has_that_many_threads_and_every_job_runs(pool):
    pool = worker_module._Pool(size=3, idle_seconds=0.05)
    worker_module._POOL = pool  # restored by the fixture's monkeypatch
    lanes = [BackgroundWorker(f"lane {i}") for i in range(pool.size + 2)]
    release = threading.Event()
    lock = threading.Lock()
    running, most, names = [0], [0], set()

    def job(i):
        def run():
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
                names.add(threading.current_thread().name)
            release.wait()
            with lock:
                running[0] -= 1
            return i

        return run

    try:
        for i, lane in enumerate(lanes):
            lane.submit(f"job {i}", job(i))
        _wait_until(lambda: running[0] == pool.size)
        assert pool.threads == pool.size
    finally:
        release.set()
    for i, lane in enumerate(lanes):
        lane.wait()
        assert lane.drain() == [i]
    assert most[0] == pool.size
    assert names == {f"cvml-worker-{n}" for n in range(1, pool.size + 1)}


def test_a_busy_lane_does_not_starve_the_others(pool):
    """A lane goes to the back of the queue after each job: with one thread, two busy
    lanes take turns."""
    single = worker_module._Pool(size=1, idle_seconds=0.05)
    worker_module._POOL = single  # restored by the fixture's monkeypatch
    order = []
    gate = threading.Event()
    first, second = BackgroundWorker("a", backlog=None), BackgroundWorker("b", backlog=None)
    first.submit("a0", lambda: gate.wait() and order.append("a0"))
    for i in (1, 2):
        first.submit(f"a{i}", lambda i=i: order.append(f"a{i}"))
    for i in (0, 1):
        second.submit(f"b{i}", lambda i=i: order.append(f"b{i}"))
    gate.set()
    first.wait()
    second.wait()
    assert order == ["a0", "b0", "a1", "b1", "a2"]
    _wait_until(lambda: single.threads == 0)


def test_pool_threads_end_when_idle(pool):
    lane = BackgroundWorker()
    for i in range(3):
        lane.submit(f"job {i}", lambda i=i: i)
    lane.wait()
    _wait_until(lambda: pool.threads == 0)
    # Work after that starts a thread again.
    lane.submit("later", lambda: "later")
    lane.wait()
    assert lane.drain() == [0, 1, 2, "later"]


@pytest.mark.skipif(worker_module._malloc_trim() is None, reason="glibc's malloc_trim only")
def test_a_jobs_freed_heap_memory_is_given_back_before_the_lane_reads_idle(pool):
    psutil = pytest.importorskip("psutil")
    kept: list[bytearray] = []

    def fragment_the_heap() -> None:
        # 190 MB of blocks below glibc's mmap threshold, every 8th kept: the freed ones
        # lie between kept ones, where glibc does not shrink the heap by itself.
        blocks = [bytearray(32 * 1024) for _ in range(6000)]
        kept.extend(blocks[::8])

    process = psutil.Process()
    before = process.memory_info().rss
    worker = BackgroundWorker("heap")
    worker.submit("fragment", fragment_the_heap)
    worker.wait()
    growth = process.memory_info().rss - before
    kept_bytes = sum(len(block) for block in kept)
    # Without the trim the whole 190 MB stays (measured: 197 MB of growth for 25 MB kept).
    assert growth < kept_bytes + 60e6, (growth, kept_bytes)
