"""Engine reductions over NumPy arrays against exact references, partitions
and axes, zero-copy inputs, partial states and errors."""

import os
import threading

import numpy as np
import pytest

import gpulanes
from reference import reference, same_bits

DTYPES = [np.float32, np.float64, np.int32, np.uint32, np.int64]
OPS = ["sum", "mean", "max", "min", "count"]


def data(dtype, n, seed=0, nans=False):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        top = 30 if dtype == np.float32 else 200
        x = rng.standard_normal(n) * 10.0 ** rng.uniform(-top, top, n)
        x = x.astype(dtype)
        if n > 10:
            x[3] = -x[5]  # exact cancellation
            x[7] = np.finfo(dtype).smallest_subnormal
        if nans and n > 2:
            x[rng.integers(0, n, 3)] = np.nan
        return x
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -(2**40)), min(info.max, 2**40)
    return rng.integers(lo, hi, n, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 1000, 100_003])
def test_every_dtype_and_op_matches_the_exact_reference(engine, dtype, n):
    x = data(dtype, n, seed=n)
    for op in OPS:
        got = engine.reduce(x, op)
        want = reference(x, op)
        assert same_bits(got, want), (op, got, want)
    # The named methods are the same calls.
    assert same_bits(engine.sum(x), reference(x, "sum"))
    assert same_bits(engine.count(x), reference(x, "count"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nan", ["propagate", "ignore"])
def test_nan_policies(engine, dtype, nan):
    x = data(dtype, 5000, seed=3, nans=True)
    for op in OPS:
        got = engine.reduce(x, op, nan=nan)
        want = reference(x, op, nan)
        if want is not None and np.isnan(want):
            assert np.isnan(got) and np.asarray(got).dtype == np.asarray(want).dtype
        else:
            assert same_bits(got, want), (op, nan, got, want)
    all_nan = np.full(4, np.nan, dtype=dtype)
    assert engine.max(all_nan, nan="ignore") is None
    assert engine.mean(all_nan, nan="ignore") is None
    assert engine.count(all_nan, nan="ignore") == 0
    assert engine.sum(all_nan, nan="ignore") == 0


def test_empty_and_signed_zero_rules(engine):
    empty = np.zeros(0, dtype=np.float32)
    assert engine.sum(empty) == 0 and engine.count(empty) == 0
    assert engine.mean(empty) is None and engine.max(empty) is None
    neg = np.array([-0.0, -0.0], dtype=np.float64)
    assert np.signbit(engine.sum(neg)) and np.signbit(engine.mean(neg))
    assert not np.signbit(engine.max(np.array([-0.0, 0.0])))


@pytest.mark.parametrize("dtype", DTYPES)
def test_partitions_offsets_and_several_ops(engine, dtype):
    x = data(dtype, 10_007, seed=11)
    k = 97
    got = engine.reduce(x, OPS, partition_size=k)
    for op in OPS:
        want = [reference(x[i : i + k], op) for i in range(0, len(x), k)]
        assert got[op].dtype == np.asarray(want[0]).dtype
        for g, w in zip(got[op], want):
            assert same_bits(g, w), op
    offsets = [0, 0, 5, 5, 1000, 10_007]
    got = engine.reduce(x, "mean", offsets=offsets)
    assert isinstance(got, np.ma.MaskedArray)
    assert got.mask.tolist() == [True, False, True, False, False]
    for i, (a, b) in enumerate(zip(offsets, offsets[1:])):
        if b > a:
            assert same_bits(got.data[i], reference(x[a:b], "mean"))
    sums = engine.reduce(x, "sum", offsets=offsets)
    assert not isinstance(sums, np.ma.MaskedArray) and sums[0] == 0


def test_axis_reductions(engine):
    x = data(np.float64, 3 * 5 * 7, seed=5).reshape(3, 5, 7)
    for axis in [0, 1, 2, -1, (0, 2), (1, 2)]:
        got = engine.reduce(x, "sum", axis=axis)
        axes = (axis,) if isinstance(axis, int) else axis
        axes = tuple(a % 3 for a in axes)
        kept = [i for i in range(3) if i not in axes]
        moved = np.moveaxis(x, axes, range(3 - len(axes), 3))
        want_shape = tuple(x.shape[i] for i in kept)
        assert got.shape == want_shape
        flat = moved.reshape(int(np.prod(want_shape)), -1)
        for g, lane in zip(got.ravel(), flat):
            assert same_bits(g, reference(lane, "sum"))
    ints = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert engine.reduce(ints, "sum", axis=0).tolist() == [12, 15, 18, 21]
    assert engine.reduce(ints, "max", axis=1).tolist() == [3, 7, 11]
    with pytest.raises(ValueError):
        engine.reduce(ints, "sum", axis=2)


def test_contiguous_arrays_are_read_in_place(engine):
    x = np.arange(1 << 16, dtype=np.float32)
    addr, copied = engine._input_address(x)
    assert addr == x.ctypes.data and not copied
    # A contiguous slice starts inside the same buffer.
    addr, copied = engine._input_address(x[100:200])
    assert addr == x.ctypes.data + 400 and not copied
    # A Fortran-ordered array: in place for whole reductions, copied into C
    # order for partitioned ones.
    f = np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4))
    assert engine._input_address(f) == (f.ctypes.data, False)
    assert engine._input_address(f, partitioned=True)[1]
    # A strided view is copied (and still reduced right).
    s = x[::3]
    addr, copied = engine._input_address(s)
    assert copied and addr != s.ctypes.data
    assert same_bits(engine.sum(s), reference(s, "sum"))
    # Python sequences are converted by NumPy.
    assert engine._input_address([1.0, 2.0])[1]
    assert same_bits(engine.sum([1.0, 2.0]), np.float64(3.0))


def test_unaligned_arrays_are_copied_and_reduced(engine):
    raw = np.zeros(8 * 100 + 1, dtype=np.uint8)
    x = raw[1:].view(np.float64)
    x[:] = np.arange(100)
    addr, copied = engine._input_address(x)
    assert copied
    assert engine.sum(x) == 4950.0


def test_states_merge_to_the_bits_of_one_reduction(engine):
    rng = np.random.default_rng(7)
    for dtype in DTYPES:
        x = data(dtype, 20_000, seed=9)
        cuts = np.sort(rng.integers(0, len(x), 6))
        pieces = np.split(x, cuts)
        for op in OPS:
            states = [engine.partial(p, op) for p in pieces]
            rng.shuffle(states)
            merged = gpulanes.merge(states)
            assert same_bits(gpulanes.finalize(merged, op), engine.reduce(x, op)), (dtype, op)
            # A tree of merges gives the same bytes.
            tree = gpulanes.merge([gpulanes.merge(states[:3]), gpulanes.merge(states[3:])])
            assert tree == merged
    info = gpulanes.state_info(engine.partial(np.arange(5, dtype=np.int32), "max"))
    assert info == {"dtype": "int32", "kind": "max", "len": 5, "count": 5}
    per = engine.partial(np.arange(10, dtype=np.float32), "sum", partition_size=4)
    assert [gpulanes.finalize(s) for s in per] == [6.0, 22.0, 17.0]


def test_corrupt_and_foreign_states_raise_value_error(engine):
    good = engine.partial(np.arange(100, dtype=np.float64), "sum")
    bad = [
        b"",
        b"GLPS",
        good[:-1],
        good + b"\0",
        b"XXXX" + good[4:],
        good[:4] + b"\x09" + good[5:],  # version
        good[:5] + b"\x07" + good[6:],  # dtype
        good[:6] + b"\x05" + good[7:],  # kind
        bytes(range(64)),
        __import__("pickle").dumps(1.5),
    ]
    for b in bad:
        with pytest.raises(ValueError):
            gpulanes.finalize(b)
        with pytest.raises(ValueError):
            gpulanes.merge([good, b])
    other = engine.partial(np.arange(100, dtype=np.float32), "sum")
    with pytest.raises(ValueError):
        gpulanes.merge([good, other])
    with pytest.raises(ValueError):
        gpulanes.merge([good, engine.partial(np.arange(3.0), "max")])
    with pytest.raises(ValueError):
        gpulanes.merge([])
    with pytest.raises(ValueError):
        gpulanes.finalize(good, "max")


def test_bad_input_raises(engine):
    for x in [np.zeros(3, dtype=complex), np.zeros(3, dtype="datetime64[s]"),
              np.zeros(3, dtype=object), np.array(["a"])]:
        with pytest.raises(ValueError):
            engine.sum(x)
    x = np.arange(10.0)
    with pytest.raises(ValueError):
        engine.sum(x, nan="skip")
    with pytest.raises(ValueError):
        engine.reduce(x, "median")
    with pytest.raises(ValueError):
        engine.reduce(x, [])
    with pytest.raises(ValueError):
        engine.reduce(x, "sum", offsets=[0, 5])
    with pytest.raises(ValueError):
        engine.reduce(x, "sum", offsets=[0, -1, 10])
    with pytest.raises(ValueError):
        engine.reduce(x, "sum", offsets=[0, 6, 5, 10])
    for past in (2**63, 2**64 - 1):
        with pytest.raises(ValueError, match=f"offset 1 is {past}, past"):
            engine.reduce(x, "sum", offsets=np.array([0, past, 10], dtype=np.uint64))
    with pytest.raises(ValueError):
        engine.reduce(x, "sum", partition_size=0)
    with pytest.raises(ValueError):
        engine.reduce(x, "sum", partition_size=-3)
    with pytest.raises(ValueError):
        engine.partial(x, "sum", offsets=[[0, 10]])
    with pytest.raises(ValueError):
        engine.reduce(x, "sum", partition_size=2, offsets=[0, 10])
    with pytest.raises(OverflowError):
        engine.sum(np.full(4, 2**62, dtype=np.int64))


def test_threads_share_one_engine(engine):
    xs = [data(np.float64, 50_000, seed=s) for s in range(8)]
    want = [reference(x, "sum") for x in xs]
    got = [None] * len(xs)

    def work(i):
        for _ in range(3):
            got[i] = engine.sum(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(same_bits(g, w) for g, w in zip(got, want))


def test_info():
    info = gpulanes.info()
    assert info["name"] and info["max_partitions"] > 0


def test_the_gil_is_released_while_the_gpu_works(engine):
    # While another thread is inside a long reduction, this thread keeps
    # running Python code; with the GIL held for the whole native call it
    # could not (the wrapper's own Python code takes microseconds).
    big = np.ones(16 << 20, dtype=np.float32)
    inside = threading.Event()
    done = threading.Event()
    ticks = 0

    def work():
        for _ in range(3):
            inside.set()
            engine.sum(big)
            inside.clear()
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        if inside.is_set():
            ticks += 1
    t.join()
    assert ticks >= 10


def test_device_errors_are_the_gpu_error_family():
    import subprocess
    import sys

    code = (
        "import gpulanes\n"
        "try:\n"
        "    gpulanes.Engine()\n"
        "except gpulanes.NoAdapterError as e:\n"
        "    assert isinstance(e, gpulanes.GpuError) and isinstance(e, RuntimeError)\n"
        "    print('no adapter:', e)\n"
    )
    env = dict(os.environ, WGPU_ADAPTER_NAME="no-such-adapter-anywhere")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "no adapter:" in r.stdout, r.stderr
    env = dict(os.environ, WGPU_BACKEND="not-a-backend")
    bad_env = code.replace("gpulanes.NoAdapterError", "ValueError").replace(
        "isinstance(e, gpulanes.GpuError) and isinstance(e, RuntimeError)", "True"
    )
    r = subprocess.run([sys.executable, "-c", bad_env], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "no adapter:" in r.stdout, r.stderr


@pytest.mark.parametrize("key_dtype", [np.int32, np.uint32, np.int64])
def test_keyed_reductions(engine, key_dtype):
    rng = np.random.default_rng(12)
    n = 30_000
    keys = rng.integers(0, 300, n).astype(key_dtype)
    for dtype in DTYPES:
        x = data(dtype, n, seed=13)
        got_keys, got = engine.reduce(x, OPS, keys=keys)
        distinct = np.unique(keys)
        assert got_keys.dtype == np.dtype(key_dtype) and np.array_equal(got_keys, distinct)
        for op in OPS:
            for i, k in enumerate(distinct[:20]):
                assert same_bits(got[op][i], reference(x[keys == k], op)), (dtype, op, k)
        # Row order does not change a bit; pieces merge to the same bits.
        perm = rng.permutation(n)
        assert engine.reduce(x[perm], "sum", keys=keys[perm])[1].tobytes() == got["sum"].tobytes()
        pieces = [engine.partial(x[a:b], "sum", keys=keys[a:b]) for a, b in [(0, 7000), (7000, 7001), (7001, n)]]
        mk, ms = gpulanes.merge_keyed(pieces[::-1])
        fk, fv = gpulanes.finalize_keyed(mk, ms, "mean")
        assert np.array_equal(fk, distinct) and fv.tobytes() == got["mean"].tobytes()
    with pytest.raises(ValueError):
        engine.reduce(np.arange(3.0), "sum", keys=np.arange(4, dtype=key_dtype))
    with pytest.raises(ValueError):
        engine.reduce(np.arange(3.0), "sum", keys=np.arange(3) * 1j)
    with pytest.raises(ValueError):
        engine.reduce(np.arange(3.0), "sum", keys=np.arange(3, dtype=key_dtype), partition_size=2)
    empty_keys, empty = engine.reduce(np.zeros(0), "sum", keys=np.zeros(0, dtype=key_dtype))
    assert len(empty_keys) == 0 and len(empty) == 0


def keyed_counts(keys):
    distinct, counts = np.unique(np.asarray(keys).ravel(), return_counts=True)
    return distinct, counts


def test_keyed_inputs_copied_on_the_way_in_stay_alive(engine):
    # Strided, reversed, broadcast (stride 0) and list keys and values are
    # copied by NumPy inside the call; the copies must live until the
    # engine has read them (large enough that freed memory is returned).
    n = 1_000_000
    base = np.arange(2 * n, dtype=np.int64) % 977
    cases = {
        "strided": (base[::2], np.ones(2 * n)[::2]),
        "reversed": (base[:n][::-1], np.arange(n, dtype=np.float64)[::-1]),
        "broadcast": (np.broadcast_to(np.int64(5), (n,)), np.broadcast_to(2.0, (n,))),
        "list": ((base[:n] % 13).tolist(), np.ones(n)),
    }
    for name, (keys, x) in cases.items():
        want_keys, want_counts = keyed_counts(keys)
        got_keys, got = engine.reduce(x, ["count", "sum"], keys=keys)
        assert np.array_equal(got_keys, want_keys), name
        assert np.array_equal(got["count"], want_counts), name
        xs, ks = np.asarray(x, dtype=np.float64), np.asarray(keys)
        want_sums = [xs[ks == k].sum() for k in want_keys[:5]]
        assert np.allclose(got["sum"][:5], want_sums, rtol=0, atol=0), name
        # Per-key states read the same copies.
        pk, states = engine.partial(x, "sum", keys=keys)
        fk, counts = gpulanes.finalize_keyed(pk, states, "count")
        assert np.array_equal(fk, want_keys) and np.array_equal(counts, want_counts), name


def test_finalize_keyed_types_empty_results_by_the_values_dtype(engine):
    # No states: the op's result type over the values' dtype, as
    # Engine.reduce gives for no rows; float64 where the dtype is not said.
    empty_keys = np.zeros(0, dtype=np.int32)
    cases = [
        ("sum", np.int32, np.int64),
        ("sum", np.float32, np.float32),
        ("mean", np.int64, np.float64),
        ("mean", np.float32, np.float32),
        ("max", np.uint32, np.uint32),
        ("count", np.float64, np.int64),
        (None, np.int32, np.int32),
    ]
    for op, dtype, want in cases:
        keys, values = gpulanes.finalize_keyed(empty_keys, [], op, dtype=dtype)
        assert keys.dtype == np.int32 and len(values) == 0
        assert values.dtype == np.dtype(want), (op, dtype, values.dtype)
        if op is not None:
            _, direct = engine.reduce(np.zeros(0, dtype=dtype), op, keys=empty_keys)
            assert direct.dtype == values.dtype, (op, dtype)
    assert gpulanes.finalize_keyed([], [], "sum")[1].dtype == np.float64


def test_keyed_inputs_pair_up_in_c_order(engine):
    k = np.array([3, 1, 3, 2, 1, 3])
    v = np.arange(6.0)
    want_keys, want = engine.reduce(v, "sum", keys=k)
    assert np.array_equal(want, [5.0, 3.0, 7.0])
    for keys, x in [
        (np.asfortranarray(k.reshape(2, 3)), v.reshape(2, 3)),
        (k.reshape(2, 3), np.asfortranarray(v.reshape(2, 3))),
        (np.asfortranarray(k.reshape(2, 3)), v),
    ]:
        got_keys, got = engine.reduce(x, "sum", keys=keys)
        assert np.array_equal(got_keys, want_keys) and got.tobytes() == want.tobytes()


def test_masked_entries_are_nulls(engine):
    pa = pytest.importorskip("pyarrow")
    mv = np.ma.masked_array([1.0, 2.0, 100.0, 200.0, 5.0], mask=[0, 1, 1, 1, 0])
    assert engine.sum(mv) == 6.0 and engine.count(mv) == 2
    assert engine.reduce(mv, "sum") == engine.reduce(pa.array([1.0, None, None, None, 5.0]), "sum")
    # A masked array without a masked entry is its data.
    clear = np.ma.masked_array([1.0, 2.0, 3.0], mask=[0, 0, 0])
    assert engine.sum(clear) == 6.0
    # Keyed reductions skip masked values and keep their keys (key 2 has
    # only masked values); masked keys are refused.
    keys = np.array([1, 1, 2, 2, 3])
    k, got = engine.reduce(mv, ["sum", "count"], keys=keys)
    assert k.tolist() == [1, 2, 3] and got["count"].tolist() == [1, 0, 1]
    assert got["sum"].mask.tolist() == [False, True, False]
    assert got["sum"].data[0] == 1.0 and got["sum"].data[2] == 5.0
    with pytest.raises(ValueError, match="null"):
        engine.reduce(np.arange(5.0), "sum", keys=np.ma.masked_array(keys, mask=[0, 0, 1, 0, 0]))
    # axis= reads NumPy memory: masked entries are refused, not read.
    with pytest.raises(ValueError, match="masked"):
        engine.reduce(np.ma.masked_array(np.ones((2, 3)), mask=[[0, 1, 0], [0, 0, 0]]), "sum", axis=0)


def test_pandas_series_nan_arrives_as_null(engine):
    # pandas exports a Series through the Arrow interface with its NaNs as
    # nulls (pandas' own rule for missing floats): what the docs tell users.
    pd = pytest.importorskip("pandas")
    s = pd.Series([1.0, float("nan"), 2.0])
    if not hasattr(s, "__arrow_c_stream__"):
        pytest.skip("this pandas has no Arrow export: Series go through NumPy")
    assert engine.sum(s) == 3.0
    assert engine.count(s) == 2
    assert np.isnan(engine.sum(s.to_numpy()))
    # Keyed, the NaN is a null too: skipped and not counted.
    k, got = engine.reduce(s, ["sum", "count"], keys=np.zeros(3, dtype=np.int32))
    assert k.tolist() == [0] and got["sum"].tolist() == [3.0] and got["count"].tolist() == [2]


@pytest.mark.parametrize("key_dtype", [np.int8, np.int16, np.uint8, np.uint16, np.uint64, np.bool_])
def test_narrow_and_unsigned_keys_are_widened_and_come_back_in_their_type(engine, key_dtype):
    rng = np.random.default_rng(21)
    n = 5000
    info = np.iinfo(key_dtype) if key_dtype != np.bool_ else None
    if info is None:
        keys = rng.integers(0, 2, n).astype(np.bool_)
    else:
        # Both ends of the type's range, and values between.
        keys = rng.integers(info.min, min(int(info.max), 2**62), n, dtype=np.int64, endpoint=True).astype(key_dtype)
        keys[:2] = [info.min, min(int(info.max), 2**63 - 1)]
    x = data(np.float64, n, seed=22)
    got_keys, got = engine.reduce(x, ["sum", "count"], keys=keys)
    wide = keys.astype(np.int64)
    want_keys, want = engine.reduce(x, ["sum", "count"], keys=wide)
    assert got_keys.dtype == np.dtype(key_dtype)
    assert np.array_equal(got_keys.astype(np.int64), want_keys)
    assert got["sum"].tobytes() == want["sum"].tobytes() and np.array_equal(got["count"], want["count"])
    pk, states = engine.partial(x, "sum", keys=keys)
    assert pk.dtype == np.dtype(key_dtype) and np.array_equal(pk, got_keys)
    fk, fv = gpulanes.finalize_keyed(*gpulanes.merge_keyed([(pk, states)]), "sum")
    assert fk.dtype == np.dtype(key_dtype) and fv.tobytes() == got["sum"].tobytes()


def test_keys_outside_the_engine_range_and_categorical_codes(engine):
    with pytest.raises(ValueError, match="uint64"):
        engine.reduce(np.ones(2), "sum", keys=np.array([1, 2**63], dtype=np.uint64))
    with pytest.raises(ValueError):
        engine.reduce(np.ones(2), "sum", keys=np.array([1j, 2j]))
    pd = pytest.importorskip("pandas")
    cat = pd.Series(pd.Categorical(["b", "a", "c", "a", "b"]))
    k, s = engine.reduce(np.arange(5.0), "sum", keys=cat.cat.codes)
    assert k.dtype == np.int8 and k.tolist() == [0, 1, 2] and s.tolist() == [4.0, 4.0, 2.0]


def test_several_key_columns_group_by_key_tuple(engine):
    rng = np.random.default_rng(31)
    n = 20_000
    region = rng.integers(-3, 3, n).astype(np.int32)
    customer = (rng.integers(0, 500, n) * 1_000_000_007).astype(np.int64)
    code = rng.integers(0, 200, n).astype(np.uint8)
    x = data(np.float64, n, seed=32)
    (r, c, k), got = engine.reduce(x, ["sum", "max", "count"], keys=[region, customer, code])
    assert r.dtype == np.int32 and c.dtype == np.int64 and k.dtype == np.uint8
    tuples = sorted(set(zip(region.tolist(), customer.tolist(), code.tolist())))
    assert list(zip(r.tolist(), c.tolist(), k.tolist())) == tuples
    for i in range(0, len(tuples), max(1, len(tuples) // 25)):
        rows = (region == r[i]) & (customer == c[i]) & (code == k[i])
        assert same_bits(got["sum"][i], reference(x[rows], "sum")) and got["count"][i] == rows.sum()
    # Row order changes no bit; states of pieces merge by tuple.
    perm = rng.permutation(n)
    again = engine.reduce(x[perm], "sum", keys=(region[perm], customer[perm], code[perm]))
    assert all(np.array_equal(a, b) for a, b in zip(again[0], (r, c, k)))
    assert again[1].tobytes() == got["sum"].tobytes()
    pieces = [engine.partial(x[a:b], "sum", keys=[region[a:b], customer[a:b], code[a:b]]) for a, b in [(0, 5000), (5000, n)]]
    mk, ms = gpulanes.merge_keyed(pieces[::-1])
    fk, fv = gpulanes.finalize_keyed(mk, ms, "sum")
    assert isinstance(fk, tuple) and all(np.array_equal(a, b) for a, b in zip(fk, (r, c, k)))
    assert fv.tobytes() == got["sum"].tobytes()
    # A categorical column beside an integer one; a column of another length.
    pd = pytest.importorskip("pandas")
    cat = pd.Series(pd.Categorical(np.where(region > 0, "up", "down")))
    (names, regs), s = engine.reduce(x, "count", keys=[cat, region])
    assert set(names.tolist()) == {"up", "down"} and s.sum() == n
    with pytest.raises(ValueError, match="keys for"):
        engine.reduce(x, "sum", keys=[region, customer[:-1]])


def test_what_counts_as_several_key_columns_and_other_key_forms(engine):
    x = np.arange(4.0)
    # A Python list of keys is one column; a list of arrays is several.
    k, s = engine.reduce(x, "sum", keys=[1, 2, 1, 2])
    assert k.tolist() == [1, 2] and s.tolist() == [2.0, 4.0]
    with pytest.raises(ValueError):
        engine.reduce(x[:2], "sum", keys=[[1, 2], [3, 4]])  # rows of keys, not columns
    a, b = np.array([1, 1, 2, 2]), np.array([5, 6, 5, 5])
    (ka, kb), s = engine.reduce(x, "sum", keys=[a, b])
    assert ka.tolist() == [1, 1, 2] and kb.tolist() == [5, 6, 5] and s.tolist() == [0.0, 1.0, 5.0]
    # merge_keyed and finalize_keyed take the columns as a tuple or a list.
    keys, states = engine.partial(x, "sum", keys=[a, b])
    mk, ms = gpulanes.merge_keyed([(list(keys), states)])
    assert isinstance(mk, tuple) and [c.tolist() for c in mk] == [[1, 1, 2], [5, 6, 5]]
    fk, fv = gpulanes.finalize_keyed(list(mk), ms, "sum")
    assert fv.tolist() == [0.0, 1.0, 5.0]
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    # Nullable pandas and Arrow narrow integers are widened; their nulls refused.
    for keys in [pd.Series([1, 2, 1, 2], dtype="Int8"), pd.Series([3, 4, 3, 4], dtype="UInt64"), pa.array([1, 2, 1, 2], pa.int8()), pa.array([True, False, True, False])]:
        k, s = engine.reduce(x, "sum", keys=keys)
        assert len(k) == 2 and s.tolist() in ([2.0, 4.0], [4.0, 2.0]), keys
    for keys in [pd.Series([1, None, 1, 2], dtype="Int8"), pa.array([1, None, 1, 2], pa.int16())]:
        with pytest.raises(ValueError, match="null"):
            engine.reduce(x, "sum", keys=keys)
    # A Categorical and a CategoricalIndex, and a dictionary naming a null.
    cat = pd.Categorical(["b", "a", "b", "a"], categories=["b", "a"])
    for keys in [cat, pd.CategoricalIndex(cat)]:
        k, s = engine.reduce(x, "sum", keys=keys)
        assert k.tolist() == ["b", "a"] and s.tolist() == [2.0, 4.0]
    named_null = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0, 0], pa.int32()), pa.array(["x", None]))
    with pytest.raises(ValueError, match="null"):
        engine.reduce(x, "sum", keys=named_null)
    # Keys of a type no path takes say that it is the keys.
    with pytest.raises(ValueError, match="do not order"):
        engine.reduce(x, "sum", keys=pa.array([[1], [2], [1], [2]]))


def test_merge_keyed_native_and_dict_paths_agree(engine):
    rng = np.random.default_rng(41)
    n = 30_000
    a = rng.integers(-50, 50, n).astype(np.int64)
    b = rng.integers(0, 3, n).astype(np.uint8)
    x = data(np.float64, n, seed=42)
    cuts = [(0, 9000), (9000, 9001), (9001, 20_000), (20_000, n)]
    pieces = [engine.partial(x[i:j], "max", keys=[a[i:j], b[i:j]]) for i, j in cuts]
    nk, ns = gpulanes.merge_keyed(pieces[::-1])  # integer keys: one native call
    assert nk[0].dtype == np.int64 and nk[1].dtype == np.uint8
    # The same keys as floats merge through the dict path: the same states.
    as_float = [((ka.astype(np.float64), kb.astype(np.float64)), st) for (ka, kb), st in pieces]
    fk, fs = gpulanes.merge_keyed(as_float)
    assert np.array_equal(fk[0], nk[0]) and np.array_equal(fk[1], nk[1])
    assert [bytes(s) for s in fs] == [bytes(s) for s in ns]
    (wa, wb), want = engine.reduce(x, "max", keys=[a, b])
    assert np.array_equal(wa, nk[0]) and np.array_equal(wb, nk[1])
    assert gpulanes.finalize_keyed(nk, ns, "max")[1].tobytes() == want.tobytes()
    # One column, and keys that disagree with their states.
    k1, s1 = gpulanes.merge_keyed([engine.partial(x[i:j], "sum", keys=a[i:j]) for i, j in cuts])
    assert np.array_equal(k1, np.unique(a)) and len(s1) == len(k1)
    with pytest.raises(ValueError, match="keys for"):
        gpulanes.merge_keyed([(a[:3], s1[:2])])


def test_an_engine_pickles_as_the_receiving_process_default(engine):
    import pickle

    other = gpulanes.Engine()
    back = pickle.loads(pickle.dumps(other))
    assert back is gpulanes.default_engine()
    x = np.arange(1000, dtype=np.float32)
    assert back.sum(x) == other.sum(x)
