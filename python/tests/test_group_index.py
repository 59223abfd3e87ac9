"""Group indexes (``Engine.group_index``): keys read once, several value
columns reduced by them. Each result is checked against the exact
reference and bit for bit against ``Engine.reduce`` with the keys
themselves, for every key form the engine takes (NumPy, widened, sparse,
pandas categorical, PyArrow, several columns) and values with nulls."""

import gc

import numpy as np
import pytest

import gpulanes
from reference import reference, same_bits

OPS = ["sum", "mean", "max", "min", "count"]


def columns(n, rng):
    """Value columns of every dtype, with NaN, infinities and extremes."""
    f32 = (rng.standard_normal(n) * 10.0 ** rng.uniform(-20, 20, n)).astype(np.float32)
    f64 = rng.standard_normal(n) * 10.0 ** rng.uniform(-200, 200, n)
    if n > 10:
        f32[[1, 4]] = [np.nan, np.inf]
        f64[[2, 6]] = [-np.inf, -0.0]
    i32 = rng.integers(-(2**31), 2**31, n, dtype=np.int32)
    u32 = rng.integers(0, 2**32, n, dtype=np.uint32)
    i64 = rng.integers(-(2**50), 2**50, n, dtype=np.int64)
    return [f32, f64, i32, u32, i64]


def same_result(a, b):
    """Two ``reduce`` results with ``keys=``: same keys, same bits."""
    ka, ra = a
    kb, rb = b
    if isinstance(ka, tuple):
        assert len(ka) == len(kb) and all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(ka, kb))
    else:
        assert np.array_equal(ka, kb) and np.asarray(ka).dtype == np.asarray(kb).dtype
    for op in OPS:
        x, y = ra[op], rb[op]
        assert x.dtype == y.dtype, op
        assert np.array_equal(np.ma.getmaskarray(x), np.ma.getmaskarray(y)), op
        assert np.ma.filled(x, 0).tobytes() == np.ma.filled(y, 0).tobytes(), op


def key_forms(n, rng):
    """(name, keys) for every key form the engine groups by."""
    import pandas as pd
    import pyarrow as pa

    dense = rng.integers(-50, 250, n).astype(np.int32)
    forms = [
        ("int32", dense),
        ("uint16 widened", rng.integers(0, 60_000, n).astype(np.uint16)),
        ("sparse int64", (rng.integers(0, max(n // 3, 1), n).astype(np.int64) << 35) - 2**61),
        ("uint32 ends", np.where(rng.random(n) < 0.5, rng.integers(0, 9, n), 2**32 - 1 - rng.integers(0, 9, n)).astype(np.uint32)),
        ("pandas categorical", pd.Series(pd.Categorical.from_codes(rng.integers(0, 5, n), ["e", "d", "c", "b", "a"]))),
        ("pyarrow int64", pa.array(rng.integers(0, 40, n).astype(np.int64))),
        ("two columns", [dense, rng.integers(0, 3, n).astype(np.int64)]),
    ]
    return forms


@pytest.mark.parametrize("n", [0, 1, 777, 40_001])
def test_every_column_by_an_index_matches_reduce_with_the_keys(engine, n):
    rng = np.random.default_rng(n + 5)
    values = columns(n, rng)
    for name, keys in key_forms(n, rng):
        index = engine.group_index(keys)
        distinct = engine.reduce(np.zeros(n), "count", keys=keys)[0]
        assert index.rows == n and len(index) == len(distinct[0] if isinstance(distinct, tuple) else distinct)
        for x in values:
            got = engine.reduce(x, OPS, keys=index)
            want = engine.reduce(x, OPS, keys=keys)
            same_result(got, want)
            # Index keys name every result, in order.
            ik = index.keys
            if isinstance(ik, tuple):
                assert all(np.array_equal(a, b) for a, b in zip(ik, got[0]))
            else:
                assert np.array_equal(np.asarray(ik), np.asarray(got[0])), name
        if name == "int32":
            # Against the exact reference, key by key.
            x = values[1]
            k, r = engine.reduce(x, OPS, keys=index)
            for i, key in enumerate(k[:25]):
                for op in OPS:
                    assert same_bits(r[op][i], reference(x[keys == key], op)), (op, key)


def test_nulls_keep_every_key_of_the_index(engine):
    import pandas as pd
    import pyarrow as pa

    rng = np.random.default_rng(3)
    n = 20_000
    keys = rng.integers(0, 500, n).astype(np.int64) * 1_000_003
    index = engine.group_index(keys)
    x = rng.standard_normal(n)
    null = rng.random(n) < 0.4
    # Keys whose rows are all null in this column.
    null |= np.isin(keys, np.unique(keys)[:7])
    inputs = [
        pa.array(x, mask=null),
        np.ma.masked_array(x, mask=null),
        pd.Series(np.where(null, np.nan, x)),
        pa.chunked_array([pa.array(x[:5000], mask=null[:5000]), pa.array(x[5000:], mask=null[5000:])]),
    ]
    for values in inputs:
        got = engine.reduce(values, OPS, keys=index)
        same_result(got, engine.reduce(values, OPS, keys=keys))
        assert np.array_equal(got[0], index.keys)
        assert (got[1]["count"][:7] == 0).all() and got[1]["sum"].mask[:7].all()
    # A column with every value null: every key, count 0, nothing else.
    k, r = engine.reduce(pa.nulls(n, pa.float32()), OPS, keys=index)
    assert np.array_equal(k, index.keys) and (r["count"] == 0).all() and r["max"].mask.all()


def test_partial_states_by_an_index_merge_as_states_by_keys(engine):
    rng = np.random.default_rng(9)
    n = 30_000
    keys = rng.integers(0, 2000, n).astype(np.int32)
    x = rng.standard_normal(n).astype(np.float32)
    cuts = [(0, 9000), (9000, 9001), (9001, n)]
    for op in ["sum", "max", "min"]:
        by_index = [engine.partial(x[a:b], op, keys=engine.group_index(keys[a:b])) for a, b in cuts]
        by_keys = [engine.partial(x[a:b], op, keys=keys[a:b]) for a, b in cuts]
        for (ki, si), (kk, sk) in zip(by_index, by_keys):
            assert np.array_equal(ki, kk) and list(si) == list(sk)
        mk, ms = gpulanes.merge_keyed(by_index[::-1])
        fk, fv = gpulanes.finalize_keyed(mk, ms, op)
        k, want = engine.reduce(x, op, keys=keys)
        assert np.array_equal(fk, k) and fv.tobytes() == want.tobytes()


def test_an_index_outlives_its_key_arrays_and_serves_threads(engine):
    import threading

    rng = np.random.default_rng(4)
    n = 200_000
    keys = rng.integers(0, 10_000, n).astype(np.int64) << 33
    x = rng.standard_normal(n)
    want = engine.reduce(x, OPS, keys=keys.copy())
    index = engine.group_index(keys)
    keys[:] = -1  # the index holds its own copy
    del keys
    gc.collect()
    same_result(engine.reduce(x, OPS, keys=index), want)
    results = [None] * 4

    def run(i):
        results[i] = engine.reduce(x, OPS, keys=index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        same_result(r, want)


def test_bad_uses_of_an_index_are_clear_errors(engine):
    index = engine.group_index(np.array([3, 1, 3], dtype=np.int32))
    assert len(index) == 2 and index.rows == 3 and "2 keys over 3 rows" in repr(index)
    with pytest.raises(ValueError, match="3 rows"):
        engine.reduce(np.arange(4.0), "sum", keys=index)
    with pytest.raises(ValueError, match="3 rows"):
        engine.partial(np.arange(2.0), "sum", keys=index)
    with pytest.raises(ValueError, match="not both"):
        engine.reduce(np.arange(3.0), "sum", keys=index, partition_size=2)
    with pytest.raises(ValueError, match="3 rows"):
        gpulanes.Lanes(engine).groupby(index, np.arange(4.0), "sum").result(timeout=60)
    with pytest.raises(ValueError, match="timeout"):
        gpulanes.Lanes(engine).groupby(index, np.arange(3.0), "sum", lane="batch", timeout=1.0)
    with pytest.raises(ValueError, match="keys"):
        engine.group_index(np.arange(3) * 1j)
    with pytest.raises(ValueError, match="null"):
        import pyarrow as pa

        engine.group_index(pa.array([1, None, 2], pa.int64()))
    with pytest.raises(ValueError, match="3 and 4 keys"):
        engine.group_index([np.arange(3), np.arange(4)])
    with pytest.raises(ValueError, match="GroupIndex"):
        gpulanes.merge_keyed([(index, [b"x", b"y"])])
    with pytest.raises(ValueError, match="GroupIndex"):
        gpulanes.finalize_keyed(index, [b"x", b"y"], "sum")
    empty = engine.group_index(np.zeros(0, dtype=np.int64))
    k, r = engine.reduce(np.zeros(0, dtype=np.float32), OPS, keys=empty)
    assert len(k) == 0 and len(r["sum"]) == 0 and r["sum"].dtype == np.float32


def test_keyed_state_columns_merge_and_finalize_as_lists_of_bytes(engine):
    from gpulanes import _gpulanes

    rng = np.random.default_rng(31)
    n = 50_000
    keys = rng.integers(-1000, 1000, n).astype(np.int64)
    x = rng.standard_normal(n).astype(np.float32)
    x[::97] = np.nan
    x[5::101] = -np.inf
    cuts = [(0, 20_000), (20_000, 20_001), (20_001, n)]
    ops = ["sum", "mean", "max", "min", "count"]
    columns = []
    for a, b in cuts:
        index = engine.group_index(keys[a:b])
        columns.append(engine._native.partial_by_index_columns(x[a:b], index._native, ops))
    for op in ["sum", "max", "min"]:
        parts = [engine.partial(x[a:b], op, keys=keys[a:b]) for a, b in cuts]
        assert np.array_equal(columns[0][0], parts[0][0])
        want_keys, want_states = gpulanes.merge_keyed(parts)
        mk, mb = _gpulanes.merge_keyed_columns([([k], b) for k, b in columns[::-1]])
        assert np.array_equal(mk[0], want_keys)
        for o in [o for o in ops if o == op or (op == "sum" and o in ("mean", "count"))]:
            for nan in ["propagate", "ignore"]:
                got = _gpulanes.finalize_keyed_columns(mb, o, nan)
                want = gpulanes.finalize_keyed(want_keys, want_states, o, nan)[1]
                assert got[0].tobytes() == np.asarray(want).tobytes(), (o, nan)
    # Enough entries for the merge to run on several threads, cut at key
    # boundaries: keys repeated across parts and within runs; two key
    # columns sort by tuple.
    big, big_states = [], []
    for seed in range(3):
        r = np.random.default_rng(seed)
        bk = r.integers(0, 60_000, 120_000).astype(np.int64)
        bx = r.standard_normal(120_000)
        index = engine.group_index(bk)
        big.append(engine._native.partial_by_index_columns(bx, index._native, ["sum"]))
        big_states.append(engine.partial(bx, "sum", keys=bk))
    mk, mb = _gpulanes.merge_keyed_columns([([k], b) for k, b in big])
    want_keys, want_states = gpulanes.merge_keyed(big_states)
    assert np.array_equal(mk[0], want_keys)
    got = _gpulanes.finalize_keyed_columns(mb, "sum")[0]
    assert got.tobytes() == gpulanes.finalize_keyed(want_keys, want_states, "sum")[1].tobytes()
    pair_keys, pair_bytes = _gpulanes.merge_keyed_columns([([k // 7, k % 7], b) for k, b in big])
    assert np.array_equal(pair_keys[0] * 7 + pair_keys[1], want_keys)
    assert _gpulanes.finalize_keyed_columns(pair_bytes, "sum")[0].tobytes() == got.tobytes()
    # Bad input: named errors, never a crash.
    k, blob = columns[0]
    with pytest.raises(ValueError, match="bad magic"):
        _gpulanes.finalize_keyed_columns(np.frombuffer(b"these bytes are not state columns", dtype=np.uint8), "sum")
    for cut in [0, 10, 24, len(blob) - 1]:
        with pytest.raises(ValueError):
            _gpulanes.finalize_keyed_columns(blob[:cut], "sum")
        with pytest.raises(ValueError):
            _gpulanes.merge_keyed_columns([([k], blob[:cut])])
    with pytest.raises(ValueError, match="keys for"):
        _gpulanes.merge_keyed_columns([([k[:-1]], blob)])
    with pytest.raises(ValueError, match="key column"):
        _gpulanes.merge_keyed_columns([([], blob)])
    with pytest.raises(ValueError, match="no keyed state columns"):
        _gpulanes.merge_keyed_columns([])
    sums_only = big[0][1]
    with pytest.raises(ValueError, match="hold no Max"):
        _gpulanes.finalize_keyed_columns(sums_only, "max")
    with pytest.raises(ValueError, match="do not merge"):
        _gpulanes.merge_keyed_columns([([k], blob), ([big[0][0]], sums_only)])
    rng_bytes = np.random.default_rng(5)
    for _ in range(200):
        noisy = blob.copy()
        at = rng_bytes.integers(0, len(noisy), 3)
        noisy[at] ^= rng_bytes.integers(1, 256, 3).astype(np.uint8)
        try:
            _gpulanes.finalize_keyed_columns(noisy, "sum")
        except ValueError:
            pass


def test_several_value_columns_in_one_reduce_read_the_keys_once(engine):
    import pandas as pd
    import pyarrow as pa

    rng = np.random.default_rng(41)
    n = 25_000
    k = rng.integers(0, 700, n).astype(np.int64) << 36
    a = rng.standard_normal(n).astype(np.float32)
    a[rng.random(n) < 0.1] = np.nan  # pandas' missing floats: nulls
    b = rng.integers(-(2**40), 2**40, n)
    c = pd.array(np.where(rng.random(n) < 0.3, None, rng.integers(0, 9, n)), dtype="Int32")
    df = pd.DataFrame({"a": a, "b": b, "c": c})
    want = {col: engine.reduce(df[col], OPS, keys=k) for col in df.columns}
    for x in [df, pa.table({"a": pa.array(a, from_pandas=True), "b": b, "c": pa.array(c)}), dict(df.items())]:
        keys, got = engine.reduce(x, OPS, keys=k)
        assert list(got) == ["a", "b", "c"] and np.array_equal(keys, want["a"][0])
        for col in "abc":
            same_result((keys, got[col]), want[col])
    # ops by column, as pandas' agg takes them, and an index for keys.
    index = engine.group_index(k)
    keys, got = engine.reduce(df, {"c": ["sum", "count"], "a": "max"}, keys=index)
    assert list(got) == ["c", "a"] and np.array_equal(keys, index.keys)
    assert got["a"].tobytes() == want["a"][1]["max"].tobytes()
    assert got["c"]["count"].tobytes() == want["c"][1]["count"].tobytes()
    with pytest.raises(ValueError, match="not among"):
        engine.reduce(df, {"z": "sum"}, keys=k)
    with pytest.raises(ValueError, match="no value columns"):
        engine.reduce(df[[]], "sum", keys=k)
    with pytest.raises(ValueError, match="dict"):
        engine.reduce(a, {"a": "sum"}, keys=k)
    with pytest.raises(ValueError, match="not both"):
        engine.reduce(df, "sum", keys=k, partition_size=3)


def test_lanes_group_by_an_index(engine):
    """Lanes.groupby by a GroupIndex: on both lanes, every key form, every
    value dtype, with and without nulls, the bits of Engine.reduce by the
    index."""
    import pyarrow as pa

    lanes = gpulanes.Lanes(engine)
    rng = np.random.default_rng(41)
    n = 9000
    for name, keys in key_forms(n, rng):
        index = engine.group_index(keys)
        for x in columns(n, rng):
            arr = pa.array(x, mask=rng.random(n) < 0.2)
            for values in (x, arr):
                want = engine.reduce(values, OPS, keys=index)
                for lane in ("realtime", "batch"):
                    got = lanes.groupby(index, values, OPS, lane=lane).result(timeout=120)
                    same_result(got, want)
        one = lanes.groupby(index, x, "max").result(timeout=120)
        assert one[1].tobytes() == engine.reduce(x, "max", keys=index)[1].tobytes(), name
