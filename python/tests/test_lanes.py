"""The two lanes from Python: futures completed from the scheduler, used
from threads (``.result(timeout)``) and from asyncio (``await``) at once."""

import asyncio
import gc
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
    with pytest.raises(ValueError, match="unsupported dtype <U1: expected integers, bools or floats"):
        lanes.realtime(np.array(["a", "b"]), "sum")
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


def same_keyed(got, want):
    """Two ``(keys, result)`` pairs of keyed reductions with the same bits
    (results as masked or plain arrays, or dicts of them)."""
    (gk, gr), (wk, wr) = got, want
    if gk.dtype != wk.dtype or gk.tolist() != wk.tolist():
        return False
    if isinstance(wr, dict):
        return gr.keys() == wr.keys() and all(same_keyed((gk, gr[k]), (wk, wr[k])) for k in wr)
    gm = np.ma.getmaskarray(gr)
    wm = np.ma.getmaskarray(wr)
    g = np.ma.getdata(gr)
    w = np.ma.getdata(wr)
    if g.dtype != w.dtype or not np.array_equal(gm, wm):
        return False
    bits = {4: np.uint32, 8: np.uint64}[g.dtype.itemsize]
    gv, wv = g[~gm], w[~wm]
    if g.dtype.kind == "f":
        nan = np.isnan(gv)
        if not np.array_equal(nan, np.isnan(wv)):
            return False
        gv, wv = gv[~nan], wv[~nan]
    return np.array_equal(gv.view(bits), wv.view(bits))


def test_keyed_requests_in_both_lanes(engine, lanes):
    rng = np.random.default_rng(5)
    keys = rng.integers(-50, 50, 20_000).astype(np.int64)
    x = rng.standard_normal(20_000)
    x[::97] = np.nan
    ops = ["sum", "mean", "max", "count"]
    for nan in ["propagate", "ignore"]:
        want = engine.reduce(x, ops, keys=keys, nan=nan)
        for lane in ["realtime", "batch"]:
            got = lanes.groupby(keys, x, ops, lane=lane, nan=nan).result(timeout=60)
            assert same_keyed(got, want), (lane, nan)
    ints = rng.integers(-1000, 1000, 50_000).astype(np.int32)
    k32 = rng.integers(0, 7, 50_000).astype(np.uint32)
    want = engine.reduce(ints, "sum", keys=k32)
    got = lanes.groupby(k32, ints, "sum", lane="batch").result(timeout=60)
    assert same_keyed(got, want)

    async def together():
        futs = [lanes.groupby(keys, x, "max") for _ in range(4)] + [lanes.realtime(x.astype(np.float32), "sum")]
        return await asyncio.wait_for(asyncio.gather(*futs), timeout=120)

    results = asyncio.run(together())
    want = engine.reduce(x, "max", keys=keys)
    assert all(same_keyed(r, want) for r in results[:4])


def test_keyed_requests_with_null_values(engine, lanes):
    # Masked values: skipped, their keys kept (keys 90.. have only nulls);
    # int8 keys, widened on the way in, come back as int8.
    rng = np.random.default_rng(6)
    keys = rng.integers(0, 100, 30_000).astype(np.int8)
    x = np.ma.masked_array(rng.standard_normal(30_000), mask=(keys >= 90) | (rng.random(30_000) < 0.3))
    ops = ["sum", "mean", "min", "count"]
    want = engine.reduce(x, ops, keys=keys)
    assert np.ma.getmaskarray(want[1]["sum"])[90:].all() and (want[1]["count"][90:] == 0).all()
    assert want[0].dtype == np.int8
    for lane in ["realtime", "batch"]:
        got = lanes.groupby(keys, x, ops, lane=lane).result(timeout=60)
        assert same_keyed(got, want), lane
    # Categorical keys come back as their categories.
    pa = pytest.importorskip("pyarrow")
    names = pa.array(["x", "y", "x", "z"]).dictionary_encode()
    k, s = lanes.groupby(names, np.array([1.0, 2.0, 3.0, 4.0]), "sum").result(timeout=60)
    assert k.tolist() == ["x", "y", "z"] and s.tolist() == [4.0, 2.0, 4.0]
    # Several key columns: key tuples, in both lanes.
    k2 = (keys.astype(np.int64) * 7) % 3
    want = engine.reduce(x, ops, keys=[keys, k2])
    for lane in ["realtime", "batch"]:
        (ga, gb), got = lanes.groupby([keys, k2], x, ops, lane=lane).result(timeout=60)
        assert np.array_equal(ga, want[0][0]) and np.array_equal(gb, want[0][1]), lane
        assert all(same_keyed((ga, got[op]), (want[0][0], want[1][op])) for op in ops), lane


def test_keyed_requests_of_strided_inputs(engine, lanes):
    # NumPy copies strided keys and values inside the call; the request
    # must be made from the copies while they live.
    n = 800_000
    keys = np.repeat(np.arange(n, dtype=np.int64) % 5, 2)[::2]
    x = np.repeat(np.arange(n, dtype=np.float64), 2)[::2]
    want = engine.reduce(np.ascontiguousarray(x), ["count", "sum"], keys=np.ascontiguousarray(keys))
    assert np.array_equal(want[1]["count"], [n // 5] * 5)
    for lane in ["realtime", "batch"]:
        got = lanes.groupby(keys, x, ["count", "sum"], lane=lane).result(timeout=120)
        assert same_keyed(got, want), lane


def test_keyed_requests_refuse_bad_input(lanes):
    x = np.ones(10, dtype=np.float32)
    with pytest.raises(ValueError):
        lanes.groupby(np.arange(9, dtype=np.int32), x)
    with pytest.raises(ValueError):
        lanes.groupby(np.arange(10) * 1j, x)
    with pytest.raises(ValueError):
        lanes.groupby(np.arange(10, dtype=np.int32), x, "median")
    with pytest.raises(ValueError):
        lanes.groupby(np.arange(10, dtype=np.int32), x, lane="later")
    with pytest.raises(ValueError):
        lanes.groupby(np.arange(10, dtype=np.int32), x, lane="batch", timeout=1.0)
    with pytest.raises(TimeoutError):
        lanes.groupby(np.arange(10, dtype=np.int32), x, timeout=0.0).result(timeout=30)


def test_futures_keep_their_lanes_until_they_settle(engine):
    # A Lanes made for one call and dropped at once: its futures still
    # get their results (the scheduler stays up while they are pending).
    x = np.ones(1 << 20, dtype=np.float32)
    assert gpulanes.Lanes(engine).batch(x, "sum").result(timeout=60) == 2**20
    futures = [
        gpulanes.Lanes(engine).groupby(np.arange(len(x)) % 10, x, "sum", lane="batch"),
        gpulanes.Lanes(engine).realtime(x[:1000], "max"),
        gpulanes.Lanes(engine).batch(x, "count", partition_size=1 << 10),
    ]
    gc.collect()
    keys, sums = futures[0].result(timeout=60)
    assert keys.tolist() == list(range(10)) and sums.sum() == 2**20
    assert futures[1].result(timeout=60) == 1.0
    assert futures[2].result(timeout=60).tolist() == [1 << 10] * (1 << 10)
    settled = futures[0]
    assert settled._lanes is None  # released once settled


def test_settings_metrics_and_a_full_queue(engine):
    # A long coalescing delay holds the first real-time request in its
    # queue of one: the next is refused at once under "reject".
    lanes = gpulanes.Lanes(
        engine,
        coalesce_delay=0.5,
        realtime_queue_len=1,
        when_full="reject",
        warm_dtypes=["float64", np.int8, np.dtype(">i8")],
    )
    x = np.arange(100, dtype=np.float64)
    first = lanes.realtime(x, "sum")
    with pytest.raises(gpulanes.QueueFullError):
        lanes.realtime(x, "max")
    assert first.result(timeout=30) == np.float64(4950.0)
    lanes.wait_idle()
    m = lanes.metrics()
    rt = m["realtime"]
    assert (rt["completed"], rt["failed"], rt["queue_depth"]) == (1, 0, 0)
    assert rt["bytes"] == 800 and rt["latency"]["count"] == 1
    assert 0 < rt["latency"]["p50"] <= rt["latency"]["max"] < 30
    assert m["batch"]["completed"] == 0
    assert lanes.quantum > 0 and 0 < lanes.submit_lead <= lanes.quantum
    lanes.reset_metrics()
    assert lanes.metrics()["realtime"]["completed"] == 0


def test_bad_settings_are_refused_by_name(engine):
    for settings, match in [
        ({"when_full": "drop"}, "when_full"),
        ({"quantum": -1.0}, "quantum"),
        ({"quantum": 0.001, "submit_lead": 0.002}, "lead"),
        ({"realtime_queue_len": 0}, "realtime_queue_len"),
        ({"warm_dtypes": ["complex64"]}, "complex64"),
    ]:
        with pytest.raises(ValueError, match=match):
            gpulanes.Lanes(engine, **settings)
    with pytest.raises(TypeError):
        gpulanes.Lanes(engine, quantum_us=5)
    # One dtype need not be a list.
    assert gpulanes.Lanes(engine, warm_dtypes="float64").realtime(np.ones(3), "sum").result(timeout=30) == 3.0
