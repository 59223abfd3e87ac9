"""Values of types the engine does not reduce natively: int8, int16,
uint8, uint16, bool and float16 are widened exactly (to int32, uint32 or
float32), uint64 to int64 where every value fits, and arrays in the
other byte order are put in native order. Each gives the bits of the
same reduction over the widened values, with max and min back in the
values' own type (NumPy's types), whole, partitioned, by key, as partial
states and on the lanes; NumPy (masked too), pandas nullable and PyArrow
values with nulls alike."""

import numpy as np
import pytest

import gpulanes

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")

OPS = ["sum", "mean", "max", "min", "count"]

WIDER = {
    "int8": np.int32,
    "int16": np.int32,
    "uint8": np.uint32,
    "uint16": np.uint32,
    "bool": np.uint32,
    "float16": np.float32,
    "uint64": np.int64,
}


def narrow(dtype, n, rng):
    """Values of ``dtype`` with both extremes (and NaN, ±inf, -0.0,
    subnormals for float16)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(n) < 0.3
    if dtype.kind == "f":
        x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-7, 4, n)).astype(dtype)
        specials = np.array([np.nan, np.inf, -np.inf, -0.0, 6e-8, np.finfo(dtype).max], dtype=dtype)
    else:
        top = 2**40 if dtype == np.uint64 else int(np.iinfo(dtype).max)
        bottom = 0 if dtype == np.uint64 else int(np.iinfo(dtype).min)
        x = rng.integers(bottom, top, n, endpoint=True).astype(dtype)
        specials = np.array([bottom, top], dtype=dtype)
    if n >= len(specials):
        x[rng.choice(n, len(specials), replace=False)] = specials
    return x


def same(got, want, op, own):
    """``got`` equals ``want`` (the widened values' result) bit for bit
    once max/min are in ``own``, and has NumPy's type."""
    if op in ("max", "min"):
        want = None if want is None else (want.astype(own) if isinstance(want, np.ndarray) else own.type(want))
    if want is None or got is None:
        assert got is None and want is None, op
        return
    got_a, want_a = np.ma.asarray(got), np.ma.asarray(want)
    assert got_a.dtype == want_a.dtype, (op, got_a.dtype, want_a.dtype)
    assert np.array_equal(np.ma.getmaskarray(got_a), np.ma.getmaskarray(want_a)), op
    assert np.ma.filled(got_a, 0).tobytes() == np.ma.filled(want_a, 0).tobytes(), op


@pytest.mark.parametrize("name", list(WIDER))
@pytest.mark.parametrize("n", [0, 1, 257, 40_003])
def test_narrow_values_reduce_as_their_widened_values(engine, name, n):
    rng = np.random.default_rng(n + len(name))
    own = np.dtype(name)
    x = narrow(own, n, rng)
    wide = x.astype(WIDER[name])
    keys = rng.integers(0, 9, n)
    for nan in ("propagate", "ignore"):
        got, want = engine.reduce(x, OPS, nan=nan), engine.reduce(wide, OPS, nan=nan)
        for op in OPS:
            same(got[op], want[op], op, own)
        got, want = engine.reduce(x, OPS, nan=nan, partition_size=7), engine.reduce(wide, OPS, nan=nan, partition_size=7)
        for op in OPS:
            same(got[op], want[op], op, own)
        (gk, got), (wk, want) = engine.reduce(x, OPS, nan=nan, keys=keys), engine.reduce(wide, OPS, nan=nan, keys=keys)
        assert np.array_equal(gk, wk)
        for op in OPS:
            same(got[op], want[op], op, own)
    if n:
        numpy_max = x[~np.isnan(x)].max() if own.kind == "f" and np.isnan(x).any() else x.max()
        assert engine.reduce(x, "max", nan="ignore") == numpy_max
        assert engine.reduce(x, "max", nan="ignore").dtype == own
    # Partial states are states of the widened values.
    assert gpulanes.merge([engine.partial(x[: n // 2], "sum"), engine.partial(x[n // 2 :], "sum")]) == engine.partial(wide, "sum")
    _, states = engine.partial_columns(x, ["sum", "max"], keys=keys)
    assert states.tobytes() == engine.partial_columns(wide, ["sum", "max"], keys=keys)[1].tobytes()
    lk, lr = gpulanes.Lanes(engine).groupby(keys, x, OPS, lane="batch").result(timeout=120)
    wk, wr = engine.reduce(wide, OPS, keys=keys)
    for op in OPS:
        same(lr[op], wr[op], op, own)


@pytest.mark.parametrize("name", ["int8", "uint16", "bool", "uint64"])
def test_nulls_of_arrow_pandas_and_masked_narrow_values(engine, name):
    rng = np.random.default_rng(4)
    n = 5_001
    own = np.dtype(name)
    x = narrow(own, n, rng)
    mask = rng.random(n) < 0.2
    masked_wide = np.ma.masked_array(x.astype(WIDER[name]), mask=mask)
    keys = rng.integers(0, 5, n)
    want = engine.reduce(masked_wide, OPS)
    want_keyed = engine.reduce(masked_wide, OPS, keys=keys)[1]
    nullable = {"int8": "Int8", "uint16": "UInt16", "bool": "boolean", "uint64": "UInt64"}[name]
    forms = [
        np.ma.masked_array(x, mask=mask),
        pa.array(x, mask=mask),
        pd.Series(pd.array(np.where(mask, None, x).tolist(), dtype=nullable)),
    ]
    for form in forms:
        got = engine.reduce(form, OPS)
        for op in OPS:
            same(got[op], want[op], op, own)
        got = engine.reduce(form, OPS, keys=keys)[1]
        for op in OPS:
            same(got[op], want_keyed[op], op, own)


def test_byte_order_and_refusals(engine):
    rng = np.random.default_rng(9)
    for dtype in (">f4", ">f8", ">i4", ">u4", ">i8", ">i2"):
        x = (rng.standard_normal(1000) * 1000).astype(dtype)
        native = x.astype(np.dtype(dtype).newbyteorder("="))
        got, want = engine.reduce(x, OPS), engine.reduce(native, OPS)
        for op in OPS:
            assert got[op] == want[op] or (np.isnan(got[op]) and np.isnan(want[op])), (dtype, op)
    with pytest.raises(ValueError, match="past int64"):
        engine.reduce(np.array([1, 2**64 - 1], dtype=np.uint64), "sum")
    with pytest.raises(ValueError, match="past int64"):
        engine.reduce(pa.array([1, 2**63], type=pa.uint64()), "max")
    with pytest.raises(ValueError, match="past int64"):
        engine.reduce(pd.Series([1, 2**63], dtype="UInt64"), "max")
    # A value past int64 under a mask is not read.
    masked = np.ma.masked_array(np.array([1, 2**64 - 1], dtype=np.uint64), mask=[False, True])
    assert engine.reduce(masked, "max") == np.uint64(1)
    with pytest.raises(ValueError):
        engine.reduce(np.array([1 + 1j]), "sum")
    with pytest.raises(ValueError, match="named alike"):
        engine.reduce(pd.DataFrame([[1.0, 10.0]] * 2, columns=["a", "a"]), "sum", keys=np.array([0, 1]))
