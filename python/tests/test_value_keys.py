"""Keys that are values, not integers: floats, dates and durations,
strings and bytes (NumPy, pandas, PyArrow), Python objects. Each form
groups as its values do (-0.0 with 0.0), gives the bits of the same
reduction by integer ranks of those values, and returns the distinct
values ascending in the caller's type; a missing key (NaN, NaT, None,
an Arrow or pandas null) is refused by name, as are keys that have no
order."""

import datetime
import decimal
import pickle

import numpy as np
import pytest

import gpulanes
from test_group_index import OPS, columns, same_result

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")


def normalised(v):
    """A key as Python compares it for grouping: -0.0 is 0.0."""
    return 0.0 if isinstance(v, float) and v == 0.0 else v


def ranks(values):
    """The oracle: each row's rank among the distinct values (Python's
    own equality and order), and the distinct values ascending."""
    plain = [normalised(v) for v in values]
    distinct = sorted(set(plain))
    at = {v: i for i, v in enumerate(distinct)}
    return np.array([at[v] for v in plain], dtype=np.int64), distinct


def key_forms(n, rng):
    """``(name, keys, python values of the keys, dtype of the returned keys)``."""
    words = rng.choice(["", "a", "ab", "b", "ba", "zz", "é", "日本"], n)
    floats = rng.choice([-np.inf, -1e300, -2.5, -5e-324, -0.0, 0.0, 5e-324, 1.0, 1.5, 1e300, np.inf], n)
    ticks = rng.integers(-(2**40), 2**40, n) // (2**30)
    dates = ticks.astype("datetime64[s]")
    yield "U", words, words.tolist(), words.dtype
    yield "S", np.char.encode(words, "utf-8"), np.char.encode(words, "utf-8").tolist(), np.char.encode(words, "utf-8").dtype
    yield "object", words.astype(object), words.tolist(), np.dtype(object)
    yield "list", words.tolist(), words.tolist(), np.dtype(object)
    yield "float64", floats, floats.tolist(), np.dtype(np.float64)
    with np.errstate(over="ignore"):  # 1e300 is an infinity in these
        narrow = [floats.astype(np.float32), floats.astype(np.float16)]
    for f in narrow:
        yield str(f.dtype), f, f.tolist(), f.dtype
    yield "datetime64", dates, ticks.tolist(), dates.dtype
    yield "timedelta64", ticks.astype("timedelta64[ms]"), ticks.tolist(), np.dtype("timedelta64[ms]")
    yield "pandas object", pd.Series(words.astype(object)), words.tolist(), np.dtype(object)
    yield "pandas string", pd.Series(words, dtype="string"), words.tolist(), np.dtype(object)
    yield "pandas float", pd.Series(floats), floats.tolist(), np.dtype(np.float64)
    yield "pandas Float64", pd.Series(floats, dtype="Float64"), floats.tolist(), np.dtype(np.float64)
    yield "pyarrow string", pa.array(words.tolist()), words.tolist(), np.dtype(object)
    yield "pyarrow large_string", pa.array(words.tolist(), pa.large_string()), words.tolist(), np.dtype(object)
    yield "pyarrow binary", pa.array(np.char.encode(words, "utf-8").tolist()), np.char.encode(words, "utf-8").tolist(), np.dtype(object)
    chunked = pa.chunked_array([words[: n // 3].tolist(), [], words[n // 3 :].tolist()], pa.string())
    yield "pyarrow chunked string", chunked, words.tolist(), np.dtype(object)
    yield "pyarrow float", pa.array(floats), floats.tolist(), np.dtype(np.float64)
    yield "pyarrow timestamp", pa.array(ticks, pa.timestamp("us")), ticks.tolist(), np.dtype("datetime64[us]")
    small = [datetime.date(2000, 1, 1) + datetime.timedelta(days=int(t) % 500) for t in ticks]
    yield "python dates", np.array(small, dtype=object), small, np.dtype(object)
    money = [decimal.Decimal(int(t) % 97) / 4 for t in ticks]
    yield "decimals", np.array(money, dtype=object), money, np.dtype(object)


@pytest.mark.parametrize("n", [0, 1, 1_000, 20_011])
def test_value_keys_group_as_their_ranks(engine, n):
    rng = np.random.default_rng(n + 11)
    for name, keys, python_values, dtype in key_forms(n, rng):
        codes, distinct = ranks(python_values)
        for x in columns(n, rng):
            got_keys, got = engine.reduce(x, OPS, keys=keys)
            want_keys, want = engine.reduce(x, OPS, keys=codes)
            assert np.array_equal(want_keys, np.arange(len(distinct))), name
            assert np.asarray(got_keys).dtype == dtype, name
            back = np.asarray(got_keys).tolist()
            if dtype.kind in "Mm":
                back = np.asarray(got_keys).view(np.int64).tolist()
            assert [normalised(v) for v in back] == distinct, name
            same_result((want_keys, got), (want_keys, want))


def test_float_keys_keep_every_bit_and_merge_zeros(engine):
    # Neighbouring floats stay apart, -0.0 joins 0.0, and the keys come
    # back bit for bit.
    keys = np.array([1.0, np.nextafter(1.0, 2.0), -0.0, 0.0, 5e-324, -5e-324, np.nextafter(1.0, 0.0)])
    got_keys, counts = engine.reduce(np.ones(len(keys)), "count", keys=keys)
    assert got_keys.view(np.int64).tolist() == np.array(
        [-5e-324, 0.0, 5e-324, np.nextafter(1.0, 0.0), 1.0, np.nextafter(1.0, 2.0)]
    ).view(np.int64).tolist()
    assert counts.tolist() == [1, 2, 1, 1, 1, 1]


def test_value_keys_through_every_keyed_call(engine):
    rng = np.random.default_rng(5)
    n = 12_000
    words = rng.choice(["north", "south", "east", "west", "x"], n)
    prices = rng.choice([0.5, 1.25, -3.0, 1e9], n)
    x = rng.standard_normal(n)
    x[::53] = np.nan
    codes, _ = ranks(words.tolist())
    want = engine.reduce(x, OPS, keys=codes)[1]
    # A GroupIndex, several key columns, state columns merged over chunks.
    index = engine.group_index(words)
    assert index.keys.tolist() == sorted(set(words.tolist()))
    same_result((index.keys, engine.reduce(x, OPS, keys=index)[1]), (index.keys, want))
    k, r = engine.reduce(x, OPS, keys=[words, prices])
    pairs = sorted(set(zip(words.tolist(), prices.tolist())))
    assert list(zip(k[0].tolist(), k[1].tolist())) == pairs
    pair_codes = np.array([pairs.index(p) for p in zip(words.tolist(), prices.tolist())])
    same_result((np.arange(len(pairs)), r), (np.arange(len(pairs)), engine.reduce(x, OPS, keys=pair_codes)[1]))
    parts = []
    for a, b in [(0, 0), (0, 5), (5, 4000), (4000, n)]:
        parts.append(pickle.loads(pickle.dumps(engine.partial_columns(x[a:b], OPS, keys=pa.array(words[a:b].tolist())))))
    merged = gpulanes.merge_keyed_columns(parts[::-1])
    mk, mr = gpulanes.finalize_keyed_columns(*merged, OPS)
    assert mk.tolist() == sorted(set(words.tolist()))
    same_result((codes[:0], mr), (codes[:0], want))
    kk, states = gpulanes.merge_keyed([engine.partial(x[:100], "sum", keys=words[:100]), engine.partial(x[100:], "sum", keys=words[100:])])
    assert gpulanes.finalize_keyed(kk, states, "sum")[1].tobytes() == want["sum"].tobytes()
    # Both lanes.
    lanes = gpulanes.Lanes(engine)
    for lane in ("realtime", "batch"):
        lk, lr = lanes.groupby(words, x, OPS, lane=lane).result(timeout=120)
        assert lk.tolist() == sorted(set(words.tolist()))
        same_result((codes[:0], lr), (codes[:0], want))


def test_missing_and_unordered_keys_are_refused_by_name(engine):
    x = np.arange(3.0)
    missing = [
        np.array([1.0, np.nan, 2.0]),
        np.array([1.0, np.nan, 2.0], dtype=np.float32),
        np.array(["2020-01-01", "NaT", "2020-01-02"], dtype="datetime64[D]"),
        np.array(["a", None, "b"], dtype=object),
        pd.Series(["a", None, "b"], dtype="string"),
        pd.Series([1.0, None, 2.0], dtype="Float64"),
        pa.array(["a", None, "b"]),
        pa.chunked_array([["a"], [None, "b"]]),
        pa.array([1.0, None, 2.0]),
    ]
    for keys in missing:
        with pytest.raises(ValueError, match="null|NaN"):
            engine.reduce(x, "sum", keys=keys)
        with pytest.raises(ValueError, match="null|NaN"):
            engine.group_index(keys)
    with pytest.raises(ValueError, match="complex128"):
        engine.reduce(x, "sum", keys=np.array([1j, 2j, 1j]))
    with pytest.raises(ValueError, match="cannot be hashed"):
        engine.reduce(x, "sum", keys=np.array([{"a": 1}, {"b": 2}, {"a": 1}], dtype=object))
    for mixed in (["a", 1, "a"], np.array(["a", 1, "a"], dtype=object), [b"a", "a", "b"]):
        with pytest.raises(ValueError, match="do not order"):
            engine.reduce(x, "sum", keys=mixed)


def test_value_keys_of_a_2d_array_and_zoned_times(engine):
    # Keys shaped as the values are read row by row, as integer keys are.
    v = np.arange(6.0).reshape(2, 3)
    k, r = engine.reduce(v, "sum", keys=np.array([[1.5, 0, 1.5], [0, 2, 2]]))
    assert k.tolist() == [0.0, 1.5, 2.0] and r.tolist() == [4.0, 2.0, 9.0]
    k, r = engine.reduce(v, "sum", keys=np.array([["a", "b", "a"], ["b", "c", "c"]]))
    assert k.tolist() == ["a", "b", "c"] and r.tolist() == [2.0, 4.0, 9.0]
    # PyArrow timestamps with a zone come back in that zone.
    zoned = pa.array([7200, 3600, 7200], type=pa.timestamp("s", tz="Europe/Paris"))
    k, r = engine.reduce(np.arange(3.0), "sum", keys=zoned)
    assert [t.utcoffset() is not None for t in k] == [True, True]
    assert [int(t.timestamp()) for t in k] == [3600, 7200] and r.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="float64 is the widest"):
        engine.reduce(np.arange(2.0), "sum", keys=np.array([1, 2], dtype=np.longdouble))


def test_keys_in_the_other_byte_order_and_python_lists(engine):
    x = np.array([1.0, 2.0, 4.0])
    for keys, want_keys, want in [
        (np.array([2**32, 0, 2**32], dtype=">i8"), [0, 2**32], [2.0, 5.0]),
        (np.array([3_000_000_000, 1, 2], dtype=">u4"), [1, 2, 3_000_000_000], [2.0, 4.0, 1.0]),
        (np.array([-7, 300, -7], dtype=">i2"), [-7, 300], [5.0, 2.0]),
        (np.array([1.5, -0.0, 1.5], dtype=">f8"), [0.0, 1.5], [2.0, 5.0]),
        (np.array(["2021-01-01", "2020-01-01", "2021-01-01"], dtype=">M8[D]"), [18262, 18628], [2.0, 5.0]),
        # A list keeps every string whole (NumPy's strings drop trailing
        # NULs) and every integer exact (as objects beside floats).
        (["a\x00", "a", "a\x00"], ["a", "a\x00"], [2.0, 5.0]),
        ([b"a\x00", b"a", b"a"], [b"a", b"a\x00"], [6.0, 1.0]),
        ([2**60 + 1, 0.5, 2**60], [0.5, 2**60, 2**60 + 1], [2.0, 4.0, 1.0]),
        # Integers past int64 stay integers (NumPy would make them floats).
        ([2**63, 1, 2**63], [1, 2**63], [2.0, 5.0]),
        ([3, 1, 3], [1, 3], [2.0, 5.0]),
    ]:
        k, r = engine.reduce(x, "sum", keys=keys)
        got = k.view(np.int64).tolist() if k.dtype.kind == "M" else k.tolist()
        assert got == want_keys and r.tolist() == want, keys
        if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":
            assert k.dtype == keys.dtype
    with pytest.raises(ValueError, match="2\\*\\*63"):
        engine.reduce(x, "sum", keys=np.array([2**63 + 5, 1, 1], dtype=">u8"))


def test_arrow_temporal_and_dictionary_keys(engine):
    x = np.array([1.0, 2.0, 4.0, 8.0])
    ticks = pa.array([1, 0, 1, 3], pa.int64())
    ticks32 = pa.array([1, 0, 1, 3], pa.int32())
    for keys, want_dtype in [
        (ticks.view(pa.time64("ns")), "timedelta64[ns]"),
        (ticks32.view(pa.time32("ms")), "timedelta64[ms]"),
        (ticks32.view(pa.date32()), "datetime64[D]"),
        (ticks.view(pa.date64()), "datetime64[ms]"),
        (ticks.view(pa.duration("us")), "timedelta64[us]"),
        (ticks.view(pa.timestamp("ns")), "datetime64[ns]"),
        (pa.chunked_array([ticks.slice(0, 1), ticks.slice(1)]).cast(pa.timestamp("s")), "datetime64[s]"),
    ]:
        k, r = engine.reduce(x, "sum", keys=keys)
        assert k.dtype == np.dtype(want_dtype), keys.type
        assert k.view(np.int64).tolist() == [0, 1, 3] and r.tolist() == [2.0, 5.0, 8.0], keys.type
    # pandas Series backed by PyArrow read as PyArrow keys are.
    k, r = engine.reduce(x[:3], "sum", keys=pd.Series(["a\x00", "a", "a\x00"], dtype=pd.ArrowDtype(pa.string())))
    assert k.tolist() == ["a", "a\x00"] and r.tolist() == [2.0, 5.0]
    k, r = engine.reduce(x, "sum", keys=pd.Series(ticks.view(pa.time64("ns")), dtype=pd.ArrowDtype(pa.time64("ns"))))
    assert k.view(np.int64).tolist() == [0, 1, 3]
    # A dictionary naming one value by several codes has one key for it.
    dup = pa.DictionaryArray.from_arrays(pa.array([0, 1, 1, 2]), pa.array(["a", "a", "b"]))
    k, r = engine.reduce(x, "sum", keys=dup)
    assert k.tolist() == ["a", "b"] and r.tolist() == [7.0, 8.0]


def test_merges_of_date_units_and_empty_parts(engine):
    def part(keys, values):
        return engine.partial_columns(np.asarray(values, dtype=float), "sum", keys=keys)

    far = part(np.array(["3000-01-01", "2000-01-01"], dtype="M8[s]"), [1, 2])
    fine = part(np.array(["2000-01-01"], dtype="M8[ns]"), [4])
    with pytest.raises(ValueError, match="range"):
        gpulanes.merge_keyed_columns([far, fine])
    near = part(np.array(["2000-01-01"], dtype="M8[s]"), [8])
    k, states = gpulanes.merge_keyed_columns([near, fine])
    assert k.dtype == np.dtype("M8[ns]") and gpulanes.finalize_keyed_columns(k, states, "sum")[1].tolist() == [12.0]
    # A part without keys merges with any.
    empty = part(np.zeros(0), [])
    words = part(np.array(["x", "y"]), [1, 2])
    k, states = gpulanes.merge_keyed_columns([empty, words])
    assert k.tolist() == ["x", "y"]
    with pytest.raises(ValueError, match="do not order"):
        gpulanes.merge_keyed([engine.partial(np.ones(1), "sum", keys=["a"]), engine.partial(np.ones(1), "sum", keys=[b"a"])])
