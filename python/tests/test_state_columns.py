"""Keyed state columns (``Engine.partial_columns``,
``merge_keyed_columns``, ``finalize_keyed_columns``): chunks of the rows
reduced apart, merged in any order and grouping, finish with the bits of
one ``Engine.reduce`` with ``keys=`` over all of them, for every value
dtype (NaN, infinities, extremes, nulls) and key form (integers of each
width, bools, several columns, categoricals, a GroupIndex); bad input is
a ``ValueError``."""

import pickle

import numpy as np
import pytest

import gpulanes
from test_group_index import OPS, columns, same_result

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")


def cuts(n, rng):
    """Chunk bounds: an empty chunk, a one-row chunk and random ones."""
    return sorted([0, 0, min(1, n), n] + rng.integers(0, n + 1, 4).tolist())


def take(column, a, b):
    return column[a:b] if not isinstance(column, list) else [c[a:b] for c in column]


def merged_by_chunks(engine, values, keys, ops, rng, keys_of=None):
    """``values`` reduced by ``keys`` chunk by chunk, merged in a random
    order and grouping (through pickle), finalised."""
    bounds = cuts(len(values), rng)
    parts = []
    for a, b in zip(bounds, bounds[1:]):
        k = keys_of(a, b) if keys_of else take(keys, a, b)
        part = engine.partial_columns(values[a:b], ops, keys=k)
        parts.append(pickle.loads(pickle.dumps(part)))
    rng.shuffle(parts)
    while len(parts) > 1:
        at = int(rng.integers(1, len(parts)))
        parts = [gpulanes.merge_keyed_columns(parts[:at])] + parts[at:]
        if len(parts) > 1:
            parts = parts[:-2] + [gpulanes.merge_keyed_columns(parts[-2:])]
    k, states = parts[0]
    return gpulanes.finalize_keyed_columns(k, states, ops)


@pytest.mark.parametrize("n", [0, 1, 257, 30_011])
def test_chunks_merged_finish_as_one_reduce(engine, n):
    rng = np.random.default_rng(n + 3)
    keys = rng.integers(-50, 50, n).astype(np.int64) * (2**40)
    for x in columns(n, rng):
        want = engine.reduce(x, OPS, keys=keys)
        got = merged_by_chunks(engine, x, keys, OPS, rng)
        same_result(got, want)
        # Nulls (Arrow), their keys kept with count 0.
        mask = rng.random(n) < 0.3
        arr = pa.array(x, mask=mask)
        same_result(merged_by_chunks(engine, arr, keys, OPS, rng), engine.reduce(arr, OPS, keys=keys))


def test_key_forms(engine):
    rng = np.random.default_rng(8)
    n = 20_000
    x = rng.standard_normal(n)
    x[::37] = np.nan
    forms = {
        "int32": rng.integers(-9, 9, n).astype(np.int32),
        "uint16": rng.integers(0, 60_000, n).astype(np.uint16),
        "bool": rng.random(n) < 0.5,
        "uint32 ends": np.where(rng.random(n) < 0.5, 0, 2**32 - 1).astype(np.uint32),
    }
    for name, k in forms.items():
        same_result(merged_by_chunks(engine, x, k, OPS, rng), engine.reduce(x, OPS, keys=k))
    a = rng.integers(0, 30, n).astype(np.int32)
    b = rng.integers(-(2**62), 2**62, n) // (2**55)
    same_result(merged_by_chunks(engine, x, [a, b], OPS, rng), engine.reduce(x, OPS, keys=[a, b]))
    # Categorical keys come back as their values (strings here): merged
    # by value, as merge_keyed merges them.
    cats = pd.Categorical(rng.choice(["north", "south", "east", "west", "x"], n))
    got_keys, got = merged_by_chunks(engine, x, None, OPS, rng, keys_of=lambda a, b: cats[a:b])
    want_keys, want = engine.reduce(x, OPS, keys=cats)
    order = np.argsort(np.asarray(want_keys))
    assert list(got_keys) == sorted(want_keys)
    for op in OPS:
        assert np.asarray(got[op]).tobytes() == np.asarray(want[op])[order].tobytes(), op
    # A GroupIndex reads the keys once; its keys come back.
    index = engine.group_index(forms["int32"])
    k, states = engine.partial_columns(x, ["sum", "min"], keys=index)
    assert np.array_equal(k, index.keys)
    _, r = gpulanes.finalize_keyed_columns(k, states, ["mean", "min"])
    _, w = engine.reduce(x, ["mean", "min"], keys=index)
    assert all(r[o].tobytes() == w[o].tobytes() for o in ["mean", "min"])
    # One op as a string gives an array.
    k, states = engine.partial_columns(x, "max", keys=forms["int32"])
    assert gpulanes.finalize_keyed_columns(k, states, "max")[1].tobytes() == engine.reduce(x, "max", keys=forms["int32"])[1].tobytes()


def test_bad_input_is_a_value_error(engine):
    x = np.arange(10, dtype=np.float32)
    k32 = np.arange(10, dtype=np.int32) % 3
    a = engine.partial_columns(x, "sum", keys=k32)
    b = engine.partial_columns(x.astype(np.float64), "sum", keys=k32)
    with pytest.raises(ValueError, match="do not merge"):
        gpulanes.merge_keyed_columns([a, b])
    with pytest.raises(ValueError, match="no common order"):
        gpulanes.merge_keyed_columns([a, (a[0].astype(str), a[1])])
    with pytest.raises(ValueError, match="no integer type holds them all"):
        gpulanes.merge_keyed_columns([(a[0] - 1, a[1]), (a[0].astype(np.uint64) + np.uint64(2**63), a[1])])
    with pytest.raises(ValueError, match="one column and of several"):
        gpulanes.merge_keyed_columns([a, ((a[0], a[0]), a[1])])
    with pytest.raises(ValueError, match="keys for"):
        gpulanes.merge_keyed_columns([(a[0][:-1], a[1])])
    with pytest.raises(ValueError, match="keys for"):
        gpulanes.finalize_keyed_columns(a[0][:-1], a[1], "sum")
    with pytest.raises(ValueError, match="no keyed state columns"):
        gpulanes.merge_keyed_columns([])
    with pytest.raises(ValueError, match="hold no Max"):
        gpulanes.finalize_keyed_columns(*a, "max")
    with pytest.raises(ValueError, match="no ops"):
        gpulanes.finalize_keyed_columns(*a, [])
    with pytest.raises(ValueError, match="unknown op|op"):
        engine.partial_columns(x, "median", keys=k32)
    with pytest.raises(ValueError):
        engine.partial_columns(x[:3], "sum", keys=k32)
    with pytest.raises(ValueError, match="GroupIndex"):
        gpulanes.finalize_keyed_columns(engine.group_index(k32), a[1], "sum")
    with pytest.raises(ValueError):
        gpulanes.finalize_keyed_columns(a[0], a[1][:-3], "sum")
    with pytest.raises(ValueError, match="magic"):
        gpulanes.finalize_keyed_columns(a[0], np.full(len(a[1]), 7, dtype=np.uint8), "sum")
    # Bytes are read as the array; other arrays are refused by name.
    assert gpulanes.finalize_keyed_columns(a[0], a[1].tobytes(), "sum")[1].tobytes() == gpulanes.finalize_keyed_columns(*a, "sum")[1].tobytes()
    assert np.array_equal(gpulanes.merge_keyed_columns([(a[0], a[1].tobytes())])[1], a[1])
    for bad in (a[1].astype(np.int64), a[1].reshape(1, -1)):
        with pytest.raises(ValueError, match="1-D uint8"):
            gpulanes.finalize_keyed_columns(a[0], bad, "sum")
        with pytest.raises(ValueError, match="1-D uint8"):
            gpulanes.merge_keyed_columns([(a[0], bad)])
    mixed = np.array([1, "a"], dtype=object)
    with pytest.raises(ValueError, match="do not order"):
        gpulanes.merge_keyed_columns([(mixed[:1], a[1][:0]), (mixed[1:], a[1][:0])])


@pytest.mark.parametrize("merge", ["columns", "states"])
def test_parts_with_differing_key_dtypes_merge_in_a_common_one(engine, merge):
    """Parts made apart may carry keys of different types (one chunk's
    keys read as int32, another's as int64; NumPy strings in one, pandas'
    in another): they merge in the type that holds them all, with the
    results one reduction over all rows gives."""
    rng = np.random.default_rng(21)
    n = 3_000
    half = n // 2
    x = rng.standard_normal(n)
    x[::101] = np.nan
    wide = rng.integers(-40, 40, n)
    words = rng.choice(["a", "bb", "ccc", "dddd"], n)
    days = rng.integers(0, 30, n).astype("datetime64[D]")
    cases = [
        (wide.astype(np.int32), wide.astype(np.int64), np.int64),
        (wide.astype(np.int8), (wide + 100).astype(np.uint8), np.int16),
        (wide > 0, wide.astype(np.int16), np.int16),
        (wide.astype(np.int64) + 40, (wide + 40).astype(np.uint64), np.int64),
        (wide.astype(np.int64), wide * 0.5, np.float64),
        (wide.astype(np.float16), wide.astype(np.float32), np.float32),
        (np.array([w[:1] for w in words]), words, np.dtype("<U4")),
        (np.char.encode(words, "ascii"), np.char.encode([w[:2] for w in words], "ascii"), np.dtype("S4")),
        (words, pd.Series(words), np.dtype(object)),
        (pd.Categorical(words), pa.array(words.tolist()), np.dtype(object)),
        (days, days.astype("datetime64[s]") + np.timedelta64(1, "s"), np.dtype("datetime64[s]")),
    ]

    def rows(k, a, b):
        return k.iloc[a:b] if hasattr(k, "iloc") else k[a:b]

    def values_of(k):
        if hasattr(k, "to_pylist"):
            return np.array(k.to_pylist(), dtype=object)
        return np.asarray(k)

    for first, second, want_dtype in cases:
        a, b = rows(first, 0, half), rows(second, half, n)
        if merge == "columns":
            parts = [engine.partial_columns(x[:half], OPS, keys=a), engine.partial_columns(x[half:], OPS, keys=b)]
            keys, states = gpulanes.merge_keyed_columns(parts[::-1])
            keys, got = gpulanes.finalize_keyed_columns(keys, states, OPS)
        else:
            parts = [engine.partial(x[:half], "sum", keys=a), engine.partial(x[half:], "sum", keys=b)]
            keys, states = gpulanes.merge_keyed(parts[::-1])
            keys, got = gpulanes.finalize_keyed(keys, states, "sum")
            got = {"sum": got}
        assert np.asarray(keys).dtype == want_dtype, (first.dtype, second.dtype)
        whole = np.concatenate([values_of(a).astype(want_dtype), values_of(b).astype(want_dtype)])
        want_keys, want = engine.reduce(x, list(got), keys=whole)
        assert np.asarray(keys).tolist() == np.asarray(want_keys).tolist()
        for op in got:
            assert np.array_equal(np.ma.getmaskarray(got[op]), np.ma.getmaskarray(want[op])), op
            assert np.ma.filled(got[op], 0).tobytes() == np.ma.filled(want[op], 0).tobytes(), op
    # No common order, or no exact common type: refused by name.
    a = engine.partial_columns(x[:10], "sum", keys=words[:10])
    b = engine.partial_columns(x[10:20], "sum", keys=np.char.encode(words[10:20], "ascii"))
    with pytest.raises(ValueError, match="do not order"):
        gpulanes.merge_keyed_columns([a, b])
    c = engine.partial_columns(x[:10], "sum", keys=np.full(10, 2**60))
    d = engine.partial_columns(x[:10], "sum", keys=np.full(10, 0.5))
    with pytest.raises(ValueError, match="2\\^53"):
        gpulanes.merge_keyed_columns([c, d])
