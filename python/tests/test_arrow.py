"""Arrow inputs through the PyCapsule interface: nulls are SQL NULL (skipped,
not counted, all-null is None), distinct from NaN; one chunk without nulls
is read in place."""

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

import gpulanes  # noqa: E402
from reference import reference, same_bits  # noqa: E402

OPS = ["sum", "mean", "max", "min", "count"]
TYPES = [(pa.float32(), np.float32), (pa.float64(), np.float64), (pa.int32(), np.int32),
         (pa.uint32(), np.uint32), (pa.int64(), np.int64)]


def with_nulls(np_type, n, seed):
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(n) * 1000).astype(np_type) if np.dtype(np_type).kind == "f" \
        else rng.integers(0, 10_000, n).astype(np_type)
    valid = rng.random(n) > 0.3
    return values, valid


@pytest.mark.parametrize("pa_type,np_type", TYPES)
def test_nulls_are_skipped_and_not_counted(engine, pa_type, np_type):
    values, valid = with_nulls(np_type, 5001, seed=1)
    arr = pa.array(values, type=pa_type, mask=~valid)
    assert arr.null_count > 0
    kept = values[valid]
    for op in OPS:
        assert same_bits(engine.reduce(arr, op), reference(kept, op)), op
    # A sliced array (an Arrow offset) reads the right values and bits.
    sl = arr.slice(17, 3000)
    sv, sm = values[17:3017], valid[17:3017]
    assert same_bits(engine.sum(sl), reference(sv[sm], "sum"))
    # Partitions are over the values nulls included.
    got = engine.reduce(arr, "sum", partition_size=100)
    for i, g in enumerate(got):
        part, m = values[i * 100 : (i + 1) * 100], valid[i * 100 : (i + 1) * 100]
        assert same_bits(g, reference(part[m], "sum"))


def test_null_is_not_nan(engine):
    arr = pa.array([1.0, None, float("nan"), 3.0, None], type=pa.float64())
    assert np.isnan(engine.sum(arr))
    assert engine.sum(arr, nan="ignore") == 4.0
    assert engine.count(arr) == 3
    assert engine.count(arr, nan="ignore") == 2
    assert engine.mean(arr, nan="ignore") == 2.0
    assert engine.max(arr, nan="ignore") == 3.0


def test_all_null_is_none(engine):
    arr = pa.array([None, None, None], type=pa.float32())
    for op in ["sum", "mean", "max", "min"]:
        assert engine.reduce(arr, op) is None, op
    assert engine.count(arr) == 0
    parts = engine.reduce(pa.array([1, None, None, 2], type=pa.int64()), "sum", offsets=[0, 1, 3, 4, 4])
    assert parts.mask.tolist() == [False, True, False, False]
    assert parts.data.tolist()[0] == 1 and parts.data.tolist()[2] == 2 and parts.data.tolist()[3] == 0
    counts = engine.reduce(pa.array([1, None, None, 2], type=pa.int64()), "count", offsets=[0, 1, 3, 4])
    assert counts.tolist() == [1, 0, 1]


def test_one_chunk_without_nulls_is_read_in_place(engine):
    values = np.arange(10_000, dtype=np.float64)
    arr = pa.array(values)
    addr, copied = engine._input_address(arr)
    assert not copied and addr == arr.buffers()[1].address
    sl = arr.slice(10)
    addr, copied = engine._input_address(sl)
    assert not copied and addr == arr.buffers()[1].address + 80
    assert same_bits(engine.sum(arr), reference(values, "sum"))
    # With nulls, the non-null values are gathered (a copy).
    assert engine._input_address(pa.array([1.0, None]))[1]


def test_chunked_arrays_and_streams(engine):
    values, valid = with_nulls(np.float32, 3000, seed=4)
    chunks = [pa.array(values[i : i + 1000], mask=~valid[i : i + 1000], type=pa.float32()) for i in range(0, 3000, 1000)]
    chunked = pa.chunked_array(chunks)
    assert hasattr(chunked, "__arrow_c_stream__")
    for op in OPS:
        assert same_bits(engine.reduce(chunked, op), reference(values[valid], op))
    got = engine.reduce(chunked, "max", partition_size=700)
    for i, g in enumerate(got):
        part, m = values[i * 700 : (i + 1) * 700], valid[i * 700 : (i + 1) * 700]
        assert same_bits(g, reference(part[m], "max"))
    plain = pa.chunked_array([pa.array([1, 2], pa.int32()), pa.array([3], pa.int32())])
    assert engine.sum(plain) == 6 and engine.reduce(plain, "sum", offsets=[0, 1, 3]).tolist() == [1, 5]
    empty = pa.chunked_array([], type=pa.int64())
    assert engine.sum(empty) == 0 and engine.max(empty) is None


def test_unsupported_arrow_inputs_raise_value_error(engine):
    with pytest.raises(ValueError):
        engine.reduce(pa.array([1, None, 3]), "sum", axis=0)
    for bad in [pa.array(["a", "b"]), pa.array([1, 2], pa.decimal128(5, 2)),
                pa.array([1, 2]).dictionary_encode(), pa.record_batch({"a": [1.0]})]:
        with pytest.raises(ValueError):
            engine.sum(bad)
    # Narrow types are widened exactly, their max back in their type.
    assert engine.reduce(pa.array([1, None, -3], pa.int8()), "min") == np.int8(-3)
    assert engine.reduce(pa.array(np.array([1.5, 2.0], np.float16)), "sum") == np.float32(3.5)


def test_polars_series(engine):
    pl = pytest.importorskip("polars")
    s = pl.Series("x", [1.5, None, 2.5, float("nan")])
    assert engine.count(s) == 3
    assert engine.sum(s, nan="ignore") == 4.0


def test_large_chunks_are_read_in_place_and_merged(engine):
    rng = np.random.default_rng(8)
    parts = [rng.standard_normal(n) * 1e10 for n in (200_000, 150_001, 300_000)]
    chunked = pa.chunked_array([pa.array(p) for p in parts])
    whole = np.concatenate(parts)
    addr, copied = engine._input_address(chunked)
    assert not copied and addr == chunked.chunk(0).buffers()[1].address
    for op in OPS:
        assert same_bits(engine.reduce(chunked, op), engine.reduce(whole, op)), op
    assert engine.partial(chunked, "sum") == engine.partial(whole, "sum")
    got = engine.reduce(chunked, ["sum", "mean", "count", "max"])
    assert same_bits(got["mean"], reference(whole, "mean")) and got["count"] == len(whole)
    # Partitioned reductions gather the chunks (a copy) and give the same bits.
    assert engine.reduce(chunked, "sum", partition_size=100_000).tobytes() == \
        engine.reduce(whole, "sum", partition_size=100_000).tobytes()


def test_keyed_reductions_of_arrow_columns(engine):
    k = pa.array([1, 2, 1], pa.int64())
    v = pa.array([1.0, 2.0, 3.0])
    ks, r = engine.reduce(v, "sum", keys=k)
    assert ks.tolist() == [1, 2] and r.tolist() == [4.0, 2.0]
    # Null values are skipped (key 2's only value is null); null keys are refused.
    ks, r = engine.reduce(pa.array([1.0, None, 3.0]), "sum", keys=k)
    assert ks.tolist() == [1, 2] and r.mask.tolist() == [False, True] and r[0] == 4.0
    with pytest.raises(ValueError):
        engine.reduce(v, "sum", keys=pa.array([1, None, 1], pa.int64()))


def keyed_reference(keys, values, valid, op):
    """Per distinct key (ascending): the exact ``op`` over its non-null
    values, or for a key whose values are all null count 0 and ``None``."""
    out = []
    for k in np.unique(keys):
        rows = (keys == k) & valid
        if not rows.any():
            out.append(np.int64(0) if op == "count" else None)
        else:
            out.append(reference(values[rows], op))
    return out


def assert_keyed(got_keys, got, keys, values, valid, what):
    assert np.array_equal(got_keys, np.unique(keys)), what
    for op in OPS:
        want = keyed_reference(keys, values, valid, op)
        mask = np.ma.getmaskarray(got[op])
        for i, w in enumerate(want):
            g = None if mask[i] else got[op].data[i]
            assert same_bits(g, w), (what, op, got_keys[i], g, w)


@pytest.mark.parametrize("pa_type,np_type", TYPES)
def test_keyed_null_values_are_skipped_and_their_keys_kept(engine, pa_type, np_type):
    rng = np.random.default_rng(5)
    n = 6000
    values, valid = with_nulls(np_type, n, seed=6)
    keys = rng.integers(-40, 260, n).astype(np.int64)
    valid &= keys < 200  # keys 200.. have only nulls
    arr = pa.array(values, type=pa_type, mask=~valid)
    got_keys, got = engine.reduce(arr, OPS, keys=keys)
    assert_keyed(got_keys, got, keys, values, valid, "one chunk")
    # Several chunks (copied into one buffer with one bitmap), and int32
    # keys given as an Arrow array.
    chunked = pa.chunked_array([arr.slice(0, 1000), arr.slice(1000, 1), arr.slice(1001)])
    k32 = pa.array(keys.astype(np.int32))
    got_keys, got = engine.reduce(chunked, OPS, keys=k32)
    assert got_keys.dtype == np.int32
    assert_keyed(got_keys, got, keys, values, valid, "chunks")
    # A sliced array: its bitmap starts inside a byte.
    sl, sk, sv, sm = arr.slice(13, 4000), keys[13:4013], values[13:4013], valid[13:4013]
    got_keys, got = engine.reduce(sl, OPS, keys=sk)
    assert_keyed(got_keys, got, sk, sv, sm, "slice")
    # States of pieces merge to the same values; a key all null in one
    # piece and with values in another gets its values.
    for op in OPS:
        kind = {"mean": "sum", "count": "sum"}.get(op, op)
        pieces = [engine.partial(arr.slice(a, b - a), kind, keys=keys[a:b]) for a, b in [(0, 2500), (2500, 2501), (2501, n)]]
        mk, ms = gpulanes.merge_keyed(pieces[::-1])
        fk, fv = gpulanes.finalize_keyed(mk, ms, op)
        direct_keys, direct = engine.reduce(arr, op, keys=keys)
        assert np.array_equal(fk, direct_keys)
        assert np.array_equal(np.ma.getmaskarray(fv), np.ma.getmaskarray(direct)), op
        assert np.ma.filled(fv, 0).tobytes() == np.ma.filled(direct, 0).tobytes(), op


def test_keyed_all_null_and_nan_groups_differ(engine):
    keys = np.array([1, 2, 3, 1, 2, 3], dtype=np.int32)
    arr = pa.array([None, float("nan"), 1.5, None, float("nan"), None], type=pa.float64())
    k, got = engine.reduce(arr, ["sum", "mean", "count"], keys=keys, nan="ignore")
    assert k.tolist() == [1, 2, 3]
    # Key 1: only nulls. Key 2: only NaN, ignored: sum 0, no mean.
    assert got["sum"].mask.tolist() == [True, False, False]
    assert got["sum"].data[1] == 0.0 and got["sum"].data[2] == 1.5
    assert got["mean"].mask.tolist() == [True, True, False]
    assert got["count"].tolist() == [0, 0, 1]
    # Everything null: every key with count 0.
    k, got = engine.reduce(pa.array([None] * 4, type=pa.int32()), ["sum", "count"], keys=np.array([5, 4, 5, 4]))
    assert k.tolist() == [4, 5] and got["count"].tolist() == [0, 0] and got["sum"].mask.all()
    # Null keys stay refused, with what to do about them.
    with pytest.raises(ValueError, match="key is null"):
        engine.reduce(np.arange(3.0), "sum", keys=pa.array([1, None, 2]))


def test_dictionary_keys_group_by_code_and_name_groups_by_value(engine):
    names = ["b", "a", "c", "a", "b", "a", "c", "a"]
    values = np.arange(8.0)
    arr = pa.array(names).dictionary_encode()
    k, got = engine.reduce(values, ["sum", "count"], keys=arr)
    # Code order: "b" (0), "a" (1), "c" (2).
    assert k.tolist() == ["b", "a", "c"]
    assert got["sum"].tolist() == [4.0, 16.0, 8.0] and got["count"].tolist() == [2, 4, 2]
    # Chunks with different dictionaries are unified first.
    chunked = pa.chunked_array([pa.array(names[:3]).dictionary_encode(), pa.array(names[3:]).dictionary_encode()])
    k2, got2 = engine.reduce(values, "sum", keys=chunked)
    assert dict(zip(k2.tolist(), got2.tolist())) == {"b": 4.0, "a": 16.0, "c": 8.0}
    with pytest.raises(ValueError, match="null"):
        engine.reduce(values[:3], "sum", keys=pa.array(["x", None, "y"]).dictionary_encode())
    pd = pytest.importorskip("pandas")
    cat = pd.Series(pd.Categorical(names, categories=["c", "b", "a"]))
    k3, got3 = engine.reduce(values, ["sum", "mean"], keys=cat)
    assert k3.tolist() == ["c", "b", "a"] and got3["sum"].tolist() == [8.0, 4.0, 16.0]
    pk, states = engine.partial(values, "sum", keys=cat)
    assert pk.tolist() == ["c", "b", "a"] and len(states) == 3
    with pytest.raises(ValueError, match="null"):
        engine.reduce(values[:2], "sum", keys=pd.Series(pd.Categorical(["a", None])))
