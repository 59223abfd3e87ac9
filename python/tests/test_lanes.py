"""The two lanes from Python: futures completed from the scheduler, used
from threads (``.result(timeout)``) and from asyncio (``await``) at once."""

import asyncio
import concurrent.futures
import threading

import numpy as np
import pytest

import gpulanes
from reference import reference, same_bits


@pytest.fixture(scope="module")
def lanes(engine):
    return gpulanes.Lanes(engine)


def test_realtime_and_batch_results(lanes):
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    for op in ["sum", "mean", "max", "min", "count"]:
        assert same_bits(lanes.realtime(x, op).result(timeout=30), reference(x, op)), op
    big = np.random.default_rng(1).standard_normal(1 << 20).astype(np.float32)
    assert same_bits(lanes.batch(big, "sum").result(timeout=60), reference(big, "sum"))
    parts = lanes.batch(big, "max", partition_size=1 << 16).result(timeout=60)
    assert len(parts) == 16 and same_bits(parts[3], reference(big[3 << 16 : 4 << 16], "max"))
    counts = lanes.batch(big, "count", offsets=[0, 10, 1 << 20]).result(timeout=60)
    assert counts.tolist() == [10, (1 << 20) - 10]


def test_threads_and_asyncio_submit_concurrently(lanes):
    rng = np.random.default_rng(2)
    small = [rng.standard_normal(4096).astype(np.float32) for _ in range(16)]
    big = [rng.standard_normal(1 << 19).astype(np.float32) for _ in range(4)]
    errors = []

    def thread_work(i):
        try:
            for x in small:
                assert same_bits(lanes.realtime(x, "sum").result(timeout=60), reference(x, "sum"))
            fut = lanes.batch(big[i], "mean")
            assert same_bits(fut.result(timeout=60), reference(big[i], "mean"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    async def async_work():
        futs = [lanes.realtime(x, "max") for x in small] + [lanes.batch(b, "sum") for b in big]
        results = await asyncio.wait_for(asyncio.gather(*futs), timeout=120)
        want = [reference(x, "max") for x in small] + [reference(b, "sum") for b in big]
        assert all(same_bits(r, w) for r, w in zip(results, want))
        # A single await works too.
        assert await lanes.realtime(small[0], "count") == 4096

    threads = [threading.Thread(target=thread_work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    asyncio.run(async_work())
    for t in threads:
        t.join()
    assert not errors, errors


def test_deadlines_and_errors(lanes):
    x = np.ones(4096, dtype=np.float32)
    with pytest.raises(TimeoutError):
        lanes.realtime(x, "sum", timeout=0.0).result(timeout=30)
    with pytest.raises(ValueError):
        lanes.realtime(x.astype(np.float64), "sum")
    with pytest.raises(ValueError):
        lanes.realtime(x, "median")
    with pytest.raises(ValueError):
        lanes.batch(x, "sum", offsets=[0, 5])
    with pytest.raises(ValueError):
        lanes.realtime(x, "sum", timeout=-1.0)


def test_result_timeout_and_cancel(lanes):
    fut = gpulanes.LaneFuture(whole=True)
    with pytest.raises(TimeoutError):
        fut.result(timeout=0.01)
    assert isinstance(fut, concurrent.futures.Future)
    big = np.ones(1 << 22, dtype=np.float32)
    f = lanes.batch(big, "sum")
    f.cancel()
    # Cancelled here, or finished before the cancel arrived.
    assert f.cancelled() or f.result(timeout=60) == float(1 << 22)
    assert lanes.realtime(np.ones(8, dtype=np.float32), "sum").result(timeout=30) == 8.0


def test_exit_with_requests_in_flight_is_quiet():
    import subprocess
    import sys

    code = (
        "import numpy as np, gpulanes\n"
        "l = gpulanes.Lanes()\n"
        "fs = [l.batch(np.ones(1 << 22, dtype=np.float32)) for _ in range(4)]\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "panicked" not in r.stderr, r.stderr
