"""The Python table of BENCHMARKS.md: per-call cost of ``Engine.sum`` from
Python on 4 KiB, 1 MiB and 64 MiB float32 NumPy arrays against the same
engine call timed inside Rust (the Python layer's overhead) and against
``numpy.sum``; then a Dask ``LocalCluster`` (worker processes on loopback)
summing one array against one process's ``Engine.sum`` of the same data.

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


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
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
        dist = median_time(lambda: client.compute(gd.sum(d)).result(), runs)
    finally:
        client.close()
        cluster.close()
    return mib, chunk_mib, one, dist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    ap.add_argument("--dask-mib", type=int, default=64)
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


if __name__ == "__main__":
    main()
