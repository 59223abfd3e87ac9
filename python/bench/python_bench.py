"""The Python table of BENCHMARKS.md: per-call cost of ``Engine.sum`` from
Python on 4 KiB, 1 MiB and 64 MiB float32 NumPy arrays against the same
engine call timed inside Rust (the Python layer's overhead) and against
``numpy.sum``; then a Dask ``LocalCluster`` (worker processes on loopback)
summing one array against one process's ``Engine.sum`` of the same data;
then a group-by of three value columns, in one process and on the
cluster (``--groupby-rows``).

Run with the package installed (``scripts/python-test.sh`` builds it):
``target/python-venv/bin/python python/bench/python_bench.py [--quick]``.
Prints a Markdown table. Every result is checked against the in-process
engine first (same bits) and against NumPy's float64 sum (close).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("NODEVICE_SELECT", "1")

import numpy as np  # noqa: E402

import gpulanes  # noqa: E402


def median_time(fn, runs: int, before=None) -> float:
    """Median seconds of ``fn()``; ``before()`` runs untimed before each."""
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_call(engine: gpulanes.Engine, runs: int) -> list:
    """Median seconds of Engine.sum from Python, of the same engine call
    timed in Rust, of numpy.sum, and the median of the paired differences
    Python - Rust; the three are interleaved run by run (the first two in
    alternating order), so load on a shared machine hits them alike."""
    rows = []
    rng = np.random.default_rng(0)
    for label, nbytes in [("4 KiB", 4 << 10), ("1 MiB", 1 << 20), ("64 MiB", 64 << 20)]:
        x = rng.standard_normal(nbytes // 4).astype(np.float32)
        n = runs if nbytes < (1 << 24) else max(5, runs // 10)
        engine.sum(x)  # warm the pools
        ref = float(np.sum(x, dtype=np.float64))
        scale = max(1.0, float(np.sum(np.abs(x), dtype=np.float64)))
        assert abs(float(engine.sum(x)) - ref) <= 1e-6 * scale
        py, rust, npy = [], [], []
        for i in range(n):
            # Alternate which of the two goes first: the first GPU call
            # after a pause also pays for waking the driver's threads.
            if i % 2:
                rust.append(engine._native.time_sum(x, 1)[0])
            t = time.perf_counter()
            engine.sum(x)
            py.append(time.perf_counter() - t)
            if not i % 2:
                rust.append(engine._native.time_sum(x, 1)[0])
            t = time.perf_counter()
            np.sum(x)
            npy.append(time.perf_counter() - t)
        diff = statistics.median(p - r for p, r in zip(py, rust))
        rows.append((label, statistics.median(py), statistics.median(rust), diff, statistics.median(npy)))
    return rows


def forgetting(client):
    """A hook for :func:`median_time` that waits until the scheduler holds
    no more tasks than now. A run's task keys are the same every time:
    until the scheduler has let the last run's results go, a new run would
    find them there and compute nothing."""

    def tasks() -> int:
        return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))

    held = tasks()

    def forgotten() -> None:
        while tasks() > held:
            time.sleep(0.02)

    return forgotten


def dask_run(engine: gpulanes.Engine, mib: int, chunk_mib: int, runs: int) -> tuple:
    import dask.array as da
    import distributed

    import gpulanes.dask as gd

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        # The data is made on the workers and stays there, as it would in
        # a real job; the client gets a copy for the one-process run.
        rs = da.random.RandomState(1)
        d = rs.standard_normal((mib << 20) // 4, chunks=(chunk_mib << 20) // 4).astype(np.float32)
        d = client.persist(d)
        distributed.wait(d)
        x = d.compute()
        one = median_time(lambda: engine.sum(x), runs)
        want = engine.sum(x)
        got = client.compute(gd.sum(d)).result()
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), (got, want)
        dist = median_time(lambda: client.compute(gd.sum(d)).result(), runs, forgetting(client))
    finally:
        client.close()
        cluster.close()
    return mib, chunk_mib, one, dist


def groupby_run(engine: gpulanes.Engine, rows: int, runs: int) -> list:
    """Group-by of three value columns (float32, float64, int64; sum and
    max) by sparse int64 keys (``rows // 20`` distinct): in one process by
    the keys each time and by one ``GroupIndex``; on the cluster as three
    ``groupby_agg`` calls computed together and as one call over the three
    columns (8 partitions, persisted). Every result is checked to be the
    same bits as one process's ``Engine.reduce`` first."""
    import dask.dataframe as dd
    import distributed
    import pandas as pd

    import gpulanes.dask as gd

    rng = np.random.default_rng(7)
    cols = ["a", "b", "c"]
    pdf = pd.DataFrame(
        {
            "k": rng.integers(0, max(rows // 20, 1), rows).astype(np.int64) << 33,
            "a": rng.standard_normal(rows).astype(np.float32),
            "b": rng.standard_normal(rows),
            "c": rng.integers(0, 1000, rows),
        }
    )
    ops = ["sum", "max"]
    want = {c: engine.reduce(pdf[c], ops, keys=pdf["k"]) for c in cols}

    def by_index():
        index = engine.group_index(pdf["k"])
        return {c: engine.reduce(pdf[c], ops, keys=index) for c in cols}

    for c, (k, r) in by_index().items():
        assert k.tobytes() == want[c][0].tobytes() and all(r[o].tobytes() == want[c][1][o].tobytes() for o in ops)
    out = [
        ("one process, Engine.reduce by the keys, a call a column",
         median_time(lambda: [engine.reduce(pdf[c], ops, keys=pdf["k"]) for c in cols], runs)),
        ("one process, Engine.group_index once, then a call a column", median_time(by_index, runs)),
    ]
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        ddf = client.persist(dd.from_pandas(pdf, npartitions=8))
        distributed.wait(ddf)

        forgotten = forgetting(client)

        def separate():
            return client.compute([gd.groupby_agg(ddf["k"], ddf[c], ops) for c in cols], sync=True)

        def together():
            return client.compute(gd.groupby_agg(ddf["k"], ddf[cols], ops), sync=True)

        keys, got = together()
        for i, c in enumerate(cols):
            assert keys.tobytes() == want[c][0].tobytes()
            assert all(got[c][o].tobytes() == want[c][1][o].tobytes() for o in ops)
            assert all(separate()[i][1][o].tobytes() == want[c][1][o].tobytes() for o in ops)
        out.append(("LocalCluster, 2 worker processes x 1 thread, groupby_agg a column, three computed together",
                    median_time(separate, runs, forgotten)))
        out.append(("LocalCluster, 2 worker processes x 1 thread, one groupby_agg of the three columns",
                    median_time(together, runs, forgotten)))
    finally:
        client.close()
        cluster.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    ap.add_argument("--dask-mib", type=int, default=64)
    ap.add_argument("--groupby-rows", type=int, default=4_000_000, help="rows of the group-by table (0 skips it)")
    args = ap.parse_args()
    runs = 30 if args.quick else 200
    engine = gpulanes.default_engine()
    info = engine.info()
    print(f"adapter: {info['name']} ({info['backend']}, software: {info['software']}), "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs")
    print()
    print("| input (float32) | Engine.sum from Python | the engine call in Rust | Python layer (paired) | numpy.sum | Engine.sum / numpy.sum |")
    print("|---|---|---|---|---|---|")
    for label, py, rust, diff, npy in per_call(engine, runs):
        print(f"| {label} | {py * 1e6:.0f} us | {rust * 1e6:.0f} us | {diff * 1e6:+.0f} us | "
              f"{npy * 1e6:.0f} us | {py / npy:.1f}x |")
    print()
    mib, chunk, one, dist = dask_run(engine, args.dask_mib, 8, 5 if args.quick else 10)
    gb = (mib << 20) / 1e9
    print("| run | data | time | GB/s | vs one process |")
    print("|---|---|---|---|---|")
    print(f"| one process, Engine.sum | {mib} MiB float32 | {one * 1e3:.0f} ms | {gb / one:.2f} | 1.00x |")
    print(f"| LocalCluster, 2 worker processes x 1 thread, gpulanes.dask.sum, {chunk} MiB chunks (persisted) "
          f"| {mib} MiB float32 | {dist * 1e3:.0f} ms | {gb / dist:.2f} | {one / dist:.2f}x |")
    if args.groupby_rows > 0:
        rows = args.groupby_rows
        print()
        print(f"Group-by of 3 value columns (float32, float64, int64; sum and max) by {rows} sparse int64 keys, "
              f"{rows // 20} distinct:")
        print()
        print("| run | time |")
        print("|---|---|")
        for label, t in groupby_run(engine, rows, 3 if args.quick else 5):
            print(f"| {label} | {t:.2f} s |")


if __name__ == "__main__":
    main()
