"""A short tour of the gpulanes Python package: exact sums, partitions,
Arrow nulls, a group-by with missing values and categorical keys, partial
states merged out of order, and a Dask array reduced with the same bits
(Dask's threaded scheduler; a distributed cluster gives the same result)."""

import math
import os

os.environ.setdefault("NODEVICE_SELECT", "1")

import numpy as np  # noqa: E402

import gpulanes  # noqa: E402

engine = gpulanes.default_engine()
print(f"adapter: {engine.info()['name']}")
rng = np.random.default_rng(0)
x = (rng.standard_normal(1_000_000) * 1e6).astype(np.float32)
x[0], x[1] = 1e30, -1e30  # they cancel; float32 additions next to them lose the rest
fsum = np.float32(math.fsum(x.astype(np.float64).tolist()))
print(f"sum of 1M float32: gpulanes {engine.sum(x)!r}, math.fsum {fsum!r}, numpy.sum {np.sum(x)!r}")
parts = engine.reduce(x, ["mean", "max"], partition_size=250_000)
print(f"means of 4 partitions: {parts['mean']}, maxima: {parts['max']}")
try:
    import pyarrow as pa

    a = pa.array([1.5, None, float("nan"), 2.5])
    print(f"Arrow [1.5, null, nan, 2.5]: count {engine.count(a)}, mean ignoring NaN {engine.mean(a, nan='ignore')}")
except ImportError:
    pass
try:
    import pandas as pd

    orders = pd.DataFrame(
        {
            "region": pd.Categorical(["north", "south", "north", "east", "south"]),
            "amount": [12.5, None, 7.5, None, 3.0],  # missing amounts are nulls
            "units": [1, 4, 2, 6, 3],
        }
    )
    regions, totals = engine.reduce(orders["amount"], ["sum", "count"], keys=orders["region"])
    # "east" has only a missing amount: count 0, no sum (SQL's GROUP BY).
    print(f"per region {list(regions)}: sums {totals['sum']}, counts {totals['count']}")
    # Several columns by the same keys: read the keys once.
    by_region = engine.group_index(orders["region"])
    _, most_units = engine.reduce(orders["units"], "max", keys=by_region)
    print(f"per region {list(by_region.keys)}: most units {most_units}")
except ImportError:
    pass
states = [engine.partial(p, "sum") for p in np.array_split(x, 7)][::-1]
same = gpulanes.finalize(gpulanes.merge(states)) == engine.sum(x)
print(f"7 partial states merged in reverse: {len(states[0])}-byte states, same bits: {same}")
try:
    import dask.array as da

    import gpulanes.dask as gd

    d = da.from_array(x, chunks=123_457)
    print(f"Dask sum over {d.npartitions} chunks, same bits: {gd.sum(d, split_every=3).compute() == engine.sum(x)}")
except ImportError:
    pass
