"""The lanes take every value type ``Engine.reduce`` takes: float64, the
integers, narrow types (widened, max/min back in their own type), the
other byte order, and nulls of NumPy masked arrays, pandas and PyArrow.
Each result has the bits and the type ``Engine.reduce`` gives, and the
value of the independent exact reference, in both lanes, whole and
partitioned, alone and coalesced with requests of other types."""

import asyncio

import numpy as np
import pytest

import gpulanes
from reference import reference, same_bits

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")

OPS = ["sum", "mean", "max", "min", "count"]


@pytest.fixture(scope="module")
def lanes(engine):
    return gpulanes.Lanes(engine)


def values(dtype, n, rng):
    """``n`` values of ``dtype`` with the adversarial ones mixed in: NaN,
    ±inf, -0.0, subnormals and cancelling extremes for floats; both
    extremes for integers."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        info = np.finfo(dtype)
        x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n)).astype(dtype)
        specials = np.array([np.nan, np.inf, -np.inf, -0.0, info.smallest_subnormal, info.max, -info.max], dtype=dtype)
    else:
        info = np.iinfo(dtype)
        top = int(info.max) if dtype.itemsize < 8 else 2**40
        bottom = int(info.min) if dtype.itemsize < 8 else -(2**40)
        x = rng.integers(bottom, top, n, endpoint=True).astype(dtype)
        specials = np.array([bottom, top], dtype=dtype)
    if n >= len(specials):
        x[rng.choice(n, len(specials), replace=False)] = specials
    return x


def same(got, want, what):
    """Same value bits, same type, same mask (for partitioned results)."""
    if want is None or got is None:
        assert got is None and want is None, what
        return
    if isinstance(want, np.ndarray):
        got_a, want_a = np.ma.asarray(got), np.ma.asarray(want)
        assert got_a.dtype == want_a.dtype, (what, got_a.dtype, want_a.dtype)
        assert np.array_equal(np.ma.getmaskarray(got_a), np.ma.getmaskarray(want_a)), what
        assert np.ma.filled(got_a, 0).tobytes() == np.ma.filled(want_a, 0).tobytes(), what
        return
    assert same_bits(got, want), (what, got, want)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int32", "uint32", "int64"])
@pytest.mark.parametrize("n", [0, 1, 63, 4097, 100_003])
def test_every_dtype_in_both_lanes_has_the_bits_of_engine_reduce(engine, lanes, dtype, n):
    rng = np.random.default_rng(n + len(dtype))
    x = values(dtype, n, rng)
    futures = []
    for op in OPS:
        for nan in ("propagate", "ignore"):
            futures.append((op, nan, None, lanes.realtime(x, op, nan=nan)))
            futures.append((op, nan, None, lanes.batch(x, op, nan=nan)))
            futures.append((op, nan, 7, lanes.batch(x, op, nan=nan, partition_size=7)))
    for op, nan, size, fut in futures:
        got = fut.result(timeout=120)
        what = (dtype, n, op, nan, size)
        if size is None:
            same(got, engine.reduce(x, op, nan=nan), what)
            same(got, reference(x, op, nan), what)
        else:
            same(got, engine.reduce(x, op, nan=nan, partition_size=size), what)
            if n:
                same(got[-1], reference(x[(n - 1) // size * size :], op, nan), what)


def test_float64_sums_are_exact_not_float_accumulations(lanes):
    x = np.array([1e300, 1.0, -1e300, 0.1, 0.2, 0.3])
    assert lanes.realtime(x, "sum").result(timeout=30) == np.float64(1.6)
    assert lanes.batch(x, "sum").result(timeout=30) == np.float64(1.6)
    assert lanes.realtime(x, "sum").result(timeout=30).dtype == np.float64


def test_requests_of_mixed_types_coalesced_each_get_their_own(engine, lanes):
    rng = np.random.default_rng(5)
    columns = [values(d, 3001, rng) for d in ("float64", "float32", "int32", "uint32", "int64")]
    columns += [columns[0].astype(">f8"), values("int16", 3001, rng), values("float16", 3001, rng)]

    async def together():
        futs = [lanes.realtime(c, op) for c in columns for op in OPS]
        return await asyncio.wait_for(asyncio.gather(*futs), timeout=120)

    results = asyncio.run(together())
    want = [engine.reduce(c, op) for c in columns for op in OPS]
    for i, (got, w) in enumerate(zip(results, want)):
        same(got, w, (str(columns[i // 5].dtype), OPS[i % 5]))


@pytest.mark.parametrize("name", ["int8", "uint16", "bool", "float16", "uint64", ">i4"])
def test_narrow_and_swapped_values_in_the_lanes(engine, lanes, name):
    rng = np.random.default_rng(7)
    own = np.dtype(name)
    if own == np.bool_:
        x = rng.random(5000) < 0.3
    elif own == np.uint64:
        x = rng.integers(0, 2**40, 5000).astype(np.uint64)
    else:
        x = values(own.newbyteorder("="), 5000, rng).astype(own)
    for op in OPS:
        same(lanes.realtime(x, op).result(timeout=60), engine.reduce(x, op), (name, op))
        same(lanes.batch(x, op, partition_size=100).result(timeout=60), engine.reduce(x, op, partition_size=100), (name, op))
    if own.kind in "iub" and own.isnative:
        # max and min in the values' own type, as NumPy gives them.
        assert lanes.realtime(x, "max").result(timeout=60).dtype == own
    with pytest.raises(ValueError, match="past int64"):
        lanes.realtime(np.array([1, 2**64 - 1], dtype=np.uint64), "sum")


def test_nulls_in_the_lanes(engine, lanes):
    rng = np.random.default_rng(8)
    x = values("float64", 5001, rng)
    mask = rng.random(len(x)) < 0.2
    forms = [
        np.ma.masked_array(x, mask=mask),
        pa.array(x, mask=mask),
        pd.Series(pd.array(np.where(mask, None, values("int64", 5001, rng)).tolist(), dtype="Int64")),
    ]
    for form in forms:
        for op in OPS:
            same(lanes.realtime(form, op).result(timeout=60), engine.reduce(form, op), (type(form), op))
            same(
                lanes.batch(form, op, partition_size=50).result(timeout=60),
                engine.reduce(form, op, partition_size=50),
                (type(form), op),
            )
    # Every value null: no value (SQL NULL), count 0.
    nulls = np.ma.masked_array(np.ones(10), mask=np.ones(10, dtype=bool))
    assert lanes.realtime(nulls, "sum").result(timeout=60) is None
    assert lanes.batch(nulls, "count").result(timeout=60) == 0


def test_an_int64_sum_past_int64_fails_its_own_future_only(lanes):
    over = np.array([2**63 - 1, 1], dtype=np.int64)
    fine = np.array([2**63 - 1, -1], dtype=np.int64)

    async def together():
        futs = [lanes.realtime(fine, "sum"), lanes.realtime(over, "sum"), lanes.realtime(over, "max")]
        return await asyncio.gather(*futs, return_exceptions=True)

    a, b, c = asyncio.run(together())
    assert a == np.int64(2**63 - 2) and a.dtype == np.int64
    assert isinstance(b, OverflowError)
    assert c == np.int64(2**63 - 1)
    with pytest.raises(OverflowError):
        lanes.batch(over, "sum", partition_size=2).result(timeout=60)


def test_realtime_partitions_have_the_bits_of_engine_reduce(engine, lanes):
    """Partitioned real-time requests (equal partitions and offsets with
    empty partitions), submitted together so they are coalesced across
    dtypes, each get the bits of ``Engine.reduce`` with the same
    partitions."""
    rng = np.random.default_rng(11)
    offsets = [0, 0, 1, 33, 33, 5000, 10_001]
    futures = []
    for dtype in ("float32", "float64", "int64", "uint32"):
        x = values(dtype, 10_001, rng)
        for op in OPS:
            for nan in ("propagate", "ignore"):
                for parts in ({"partition_size": 64}, {"partition_size": 1}, {"offsets": offsets}):
                    futures.append((x, op, nan, parts, lanes.realtime(x, op, nan=nan, **parts)))
    for x, op, nan, parts, fut in futures:
        same(fut.result(timeout=120), engine.reduce(x, op, nan=nan, **parts), (x.dtype, op, nan, parts))
    x = values("float32", 10, rng)
    with pytest.raises(ValueError, match="offsets|partition"):
        lanes.realtime(x, "sum", offsets=[0, 5])
    with pytest.raises(ValueError, match="partition_size"):
        lanes.realtime(x, "sum", partition_size=-1)
