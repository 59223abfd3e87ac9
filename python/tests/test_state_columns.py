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
    """Parts made apart may carry keys of different widths (one chunk's
    keys read as int32, another's as int64; category values of different
    lengths): they merge in the type that holds them all, with the
    results one reduction over all rows gives."""
    rng = np.random.default_rng(21)
    n = 3_000
    half = n // 2
    x = rng.standard_normal(n)
    x[::101] = np.nan
    wide = rng.integers(-40, 40, n)
    words = rng.choice(["a", "bb", "ccc", "dddd"], n)
    cases = [
        (wide.astype(np.int32), wide.astype(np.int64), np.int64),
        (wide.astype(np.int8), (wide + 100).astype(np.uint8), np.int16),
        (wide > 0, wide.astype(np.int16), np.int16),
        (wide.astype(np.int64) + 40, (wide + 40).astype(np.uint64), np.int64),
        (np.array([w[:1] for w in words]), words, np.dtype("<U4")),
        (words.astype("S"), np.array([w[:2] for w in words]).astype("S"), np.dtype("S4")),
    ]

    def keyed(k):
        # String keys reach the engine as categories.
        return pd.Categorical(k) if k.dtype.kind in "US" else k

    for first, second, want_dtype in cases:
        a, b = keyed(first[:half]), keyed(second[half:])
        if merge == "columns":
            parts = [engine.partial_columns(x[:half], OPS, keys=a), engine.partial_columns(x[half:], OPS, keys=b)]
            # Category values come back as objects; parts kept as NumPy
            # strings carry their own widths.
            parts = [(k.astype(c.dtype), st) for (k, st), c in zip(parts, (first, second))]
            keys, states = gpulanes.merge_keyed_columns(parts[::-1])
            keys, got = gpulanes.finalize_keyed_columns(keys, states, OPS)
        else:
            parts = [engine.partial(x[:half], "sum", keys=a), engine.partial(x[half:], "sum", keys=b)]
            parts = [(k.astype(c.dtype), st) for (k, st), c in zip(parts, (first, second))]
            keys, states = gpulanes.merge_keyed(parts[::-1])
            keys, got = gpulanes.finalize_keyed(keys, states, "sum")
            got = {"sum": got}
        assert np.asarray(keys).dtype == want_dtype, (first.dtype, second.dtype)
        whole = np.concatenate([first[:half].astype(want_dtype), second[half:].astype(want_dtype)])
        want_keys, want = engine.reduce(x, list(got), keys=keyed(whole))
        assert np.asarray(keys).tolist() == np.asarray(want_keys).tolist()
        for op in got:
            assert np.array_equal(np.ma.getmaskarray(got[op]), np.ma.getmaskarray(want[op])), op
            assert np.ma.filled(got[op], 0).tobytes() == np.ma.filled(want[op], 0).tobytes(), op
