"""Dask reductions on a LocalCluster of worker processes (loopback): the
same bits as one in-process reduction for any chunking and merge tree, and
the right answer after a worker is killed mid-run."""

import os
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import gpulanes  # noqa: E402
import gpulanes.dask as gd  # noqa: E402
from reference import same_bits  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def values(dtype, n, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(n) * 10.0 ** rng.uniform(-20, 20, n)).astype(dtype)
    return rng.integers(-(2**30), 2**30, n).astype(dtype)


CHUNKINGS = [(10_000, 2), (7_919, 3), (33_333, None)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_same_bits_as_one_process_for_any_chunking(client, engine, dtype):
    x = values(dtype, 100_003, seed=1)
    want = {op: engine.reduce(x, op) for op in ["sum", "mean", "max", "min", "count"]}
    for chunks, split_every in CHUNKINGS:
        d = da.from_array(x, chunks=chunks)
        for op, want_v in want.items():
            got = client.compute(gd.reduction(d, op, split_every=split_every)).result()
            assert same_bits(np.asarray(got)[()], want_v), (op, chunks, split_every, got, want_v)
    # The work ran in other processes.
    pids = set(client.run(os.getpid).values())
    assert os.getpid() not in pids and len(pids) == 2


def test_axis_reductions_match_the_engine(client, engine):
    x = values(np.float64, 120 * 50, seed=2).reshape(120, 50)
    d = da.from_array(x, chunks=(31, 17))
    for axis in [0, 1]:
        got = client.compute(gd.sum(d, axis=axis, split_every=2)).result()
        want = engine.reduce(x, "sum", axis=axis)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    got = client.compute(gd.max(d, axis=(0, 1))).result()
    assert same_bits(np.asarray(got)[()], engine.max(x))
    kd = client.compute(gd.mean(d, axis=1, keepdims=True)).result()
    assert kd.shape == (120, 1)


def test_nan_policy_and_empty(client):
    x = np.array([1.0, np.nan, 2.0] * 1000)
    d = da.from_array(x, chunks=700)
    assert np.isnan(client.compute(gd.sum(d)).result())
    assert client.compute(gd.sum(d, nan="ignore")).result() == 3000.0
    assert client.compute(gd.count(d, nan="ignore")).result() == 2000
    e = da.zeros(0, chunks=5, dtype=np.float32)
    assert client.compute(gd.sum(e)).result() == 0
    assert np.isnan(client.compute(gd.mean(e)).result())
    with pytest.raises(ValueError):
        client.compute(gd.max(e)).result()
    nans = da.from_array(np.full(10, np.nan), chunks=3)
    assert np.isnan(client.compute(gd.max(nans, nan="ignore")).result())
    with pytest.raises(ValueError):
        gd.sum(da.zeros(3, dtype=np.complex64))


def _die_once(block, marker):
    """Kills this worker process the first time a block passes here (Dask's
    zero-size meta probe in the client process is let through)."""
    if block.size == 0:
        return block
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return block
    os.close(fd)
    os._exit(1)


def test_killed_worker_is_retried(client, engine, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    x = values(np.float32, 50_000, seed=3)
    marker = str(tmp_path / "killed")
    d = da.from_array(x, chunks=5_000).map_blocks(_die_once, marker, dtype=x.dtype, meta=np.empty(0, dtype=x.dtype))
    got = client.compute(gd.sum(d, split_every=3)).result(timeout=120)
    assert os.path.exists(marker), "no worker was killed"
    assert same_bits(np.asarray(got)[()], engine.sum(x))
    client.wait_for_workers(2, timeout=60)


def test_keyed_reduction_same_bits_as_one_process(client, engine):
    rng = np.random.default_rng(5)
    n = 60_001
    keys = rng.integers(0, 500, n).astype(np.int64)
    vals = values(np.float64, n, seed=6)
    vals[::997] = np.nan
    ops = ["sum", "mean", "max", "count"]
    want_keys, want = engine.reduce(vals, ops, keys=keys, nan="ignore")
    for chunks, split_every in CHUNKINGS:
        dk, dv = da.from_array(keys, chunks=chunks), da.from_array(vals, chunks=chunks)
        got_keys, got = client.compute(gd.groupby_agg(dk, dv, ops, nan="ignore", split_every=split_every)).result()
        assert got_keys.tobytes() == want_keys.tobytes() and got_keys.dtype == want_keys.dtype
        for op in ops:
            assert got[op].dtype == want[op].dtype and got[op].tobytes() == want[op].tobytes(), (op, chunks)
    k1, s1 = client.compute(gd.groupby_agg(da.from_array(keys, chunks=7_000), da.from_array(vals, chunks=7_000), "max")).result()
    assert k1.tobytes() == want_keys.tobytes() and np.array_equal(s1, engine.reduce(vals, "max", keys=keys)[1], equal_nan=True)


def test_masked_chunks_skip_their_masked_entries(client, engine):
    pytest.importorskip("pyarrow")
    data = np.arange(24, dtype=np.float64).reshape(4, 6)
    mask = (np.arange(24) % 5 == 0).reshape(4, 6)
    x = da.from_array(np.ma.masked_array(data, mask=mask), chunks=(2, 3))
    assert client.compute(gd.sum(x)).result() == data[~mask].sum()
    assert client.compute(gd.count(x)).result() == (~mask).sum()
    with pytest.raises(ValueError, match="masked"):
        client.compute(gd.sum(x, axis=0)).result()


def test_keyed_reduction_of_masked_chunks_keeps_the_keys_of_nulls(client, engine):
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(10)
    n = 20_000
    keys = rng.integers(0, 500, n).astype(np.int64)
    # Keys 400.. have only masked values; some chunks hold only masked ones.
    mask = (keys >= 400) | (rng.random(n) < 0.2)
    mask[:3000] = True
    vals = np.ma.masked_array(rng.standard_normal(n), mask=mask)
    ops = ["sum", "mean", "max", "count"]
    want_keys, want = engine.reduce(vals, ops, keys=keys)
    assert (want["count"][400:] == 0).all() and np.ma.getmaskarray(want["max"])[400:].all()
    for chunks, split_every in [(3000, 2), (7_001, 8)]:
        dk, dv = da.from_array(keys, chunks=chunks), da.from_array(vals, chunks=chunks, asarray=False)
        got_keys, got = client.compute(gd.groupby_agg(dk, dv, ops, split_every=split_every)).result()
        assert got_keys.tobytes() == want_keys.tobytes()
        for op in ops:
            gm, wm = np.ma.getmaskarray(got[op]), np.ma.getmaskarray(want[op])
            assert np.array_equal(gm, wm), (op, chunks)
            assert np.ma.filled(got[op], 0).tobytes() == np.ma.filled(want[op], 0).tobytes(), (op, chunks)


def test_keyed_reduction_of_nothing_and_bad_arguments(client, engine):
    ops = ["sum", "mean", "max", "count"]
    for vdtype in [np.float32, np.float64, np.int32, np.int64]:
        keys, vals = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=vdtype)
        want_keys, want = engine.reduce(vals, ops, keys=keys)
        got_keys, got = client.compute(gd.groupby_agg(da.from_array(keys), da.from_array(vals), ops)).result()
        assert len(got_keys) == 0
        for op in ops:
            assert got[op].dtype == want[op].dtype and len(got[op]) == 0, (vdtype, op)
    k, v = da.zeros(10, dtype=np.int64, chunks=5), da.ones(10, chunks=5)
    for bad in [dict(ops=[]), dict(nan="sometimes"), dict(split_every=0), dict(split_every=1)]:
        args = {"ops": "sum", **bad}
        with pytest.raises(ValueError):
            gd.groupby_agg(k, v, args.pop("ops"), **args)


def test_keyed_reduction_of_broadcast_chunks(client):
    # da.zeros / da.ones chunks are stride-0 views, copied on the way in.
    n = 2_000_000
    keys = da.zeros(n, dtype=np.int64, chunks=500_000)
    got_keys, got = client.compute(gd.groupby_agg(keys, da.ones(n, chunks=500_000), ["count", "sum"])).result()
    assert np.array_equal(got_keys, [0]) and got["count"][0] == n and got["sum"][0] == float(n)


def test_keyed_reduction_of_dataframe_columns_same_bits_as_one_process(client, engine):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    rng = np.random.default_rng(8)
    n = 40_003
    keys = rng.integers(-300, 300, n).astype(np.int32)
    vals = values(np.float32, n, seed=9)
    ops = ["sum", "mean", "max", "min", "count"]
    want_keys, want = engine.reduce(vals, ops, keys=keys)
    df = pd.DataFrame({"customer": keys, "amount": vals})
    for npartitions in (1, 3, 7):
        ddf = dd.from_pandas(df, npartitions=npartitions)
        got_keys, got = client.compute(gd.groupby_agg(ddf["customer"], ddf["amount"], ops, split_every=2)).result()
        assert got_keys.tobytes() == want_keys.tobytes()
        for op in ops:
            assert got[op].dtype == want[op].dtype and got[op].tobytes() == want[op].tobytes(), (op, npartitions)


def same_masked(got, want):
    gm, wm = np.ma.getmaskarray(got), np.ma.getmaskarray(want)
    return got.dtype == want.dtype and np.array_equal(gm, wm) and np.ma.filled(got, 0).tobytes() == np.ma.filled(want, 0).tobytes()


def test_dataframe_columns_read_as_pandas_columns_are(client, engine):
    # Missing values (NaN in a float column, pd.NA) are nulls, as
    # Engine.reduce reads a pandas column; categorical keys name groups.
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    if not hasattr(pd.Series([1.0]), "__arrow_c_stream__"):
        pytest.skip("this pandas has no Arrow export")
    rng = np.random.default_rng(12)
    n = 9_001
    k = rng.integers(0, 60, n).astype(np.int64)
    v = rng.standard_normal(n)
    v[(k >= 50) | (rng.random(n) < 0.2)] = np.nan  # keys 50.. have only missing values
    ops = ["sum", "mean", "max", "count"]
    frames = {
        "float NaN": pd.DataFrame({"k": k, "v": v}),
        "nullable": pd.DataFrame({"k": k, "v": pd.array(np.where(np.isnan(v), None, v), dtype="Float64")}),
        "categorical keys": pd.DataFrame({"k": pd.Categorical(np.array(["c%02d" % i for i in k])), "v": v}),
    }
    for name, pdf in frames.items():
        want_keys, want = engine.reduce(pdf["v"], ops, keys=pdf["k"])
        assert (want["count"][-10:] == 0).all(), name
        for npartitions in (1, 4):
            ddf = dd.from_pandas(pdf, npartitions=npartitions)
            got_keys, got = client.compute(gd.groupby_agg(ddf["k"], ddf["v"], ops, split_every=2)).result()
            assert got_keys.tolist() == want_keys.tolist(), (name, npartitions)
            for op in ops:
                assert same_masked(got[op], want[op]), (name, op, npartitions)
    other = dd.from_pandas(frames["float NaN"], npartitions=3)
    with pytest.raises(ValueError, match="partitions"):
        gd.groupby_agg(dd.from_pandas(frames["float NaN"], npartitions=2)["k"], other["v"], "sum")


def test_several_key_columns_same_bits_as_one_process(client, engine):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    rng = np.random.default_rng(13)
    n = 30_001
    pdf = pd.DataFrame(
        {
            "region": rng.integers(0, 4, n).astype(np.int32),
            "customer": rng.integers(0, 300, n).astype(np.int64) << 33,
            "amount": values(np.float64, n, seed=14),
        }
    )
    ops = ["sum", "mean", "count"]
    want_keys, want = engine.reduce(pdf["amount"], ops, keys=[pdf["region"], pdf["customer"]])
    ddf = dd.from_pandas(pdf, npartitions=5)
    got_keys, got = client.compute(gd.groupby_agg([ddf["region"], ddf["customer"]], ddf["amount"], ops)).result()
    assert isinstance(got_keys, tuple) and all(a.tobytes() == b.tobytes() for a, b in zip(got_keys, want_keys))
    for op in ops:
        assert got[op].tobytes() == want[op].tobytes(), op
    # Dask arrays, chunked unlike each other.
    dk1 = da.from_array(pdf["region"].to_numpy(), chunks=7_000)
    dk2 = da.from_array(pdf["customer"].to_numpy(), chunks=11_000)
    dv = da.from_array(pdf["amount"].to_numpy(), chunks=5_000)
    got_keys, got = client.compute(gd.groupby_agg((dk1, dk2), dv, "sum", split_every=3)).result()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got_keys, want_keys))
    assert got.tobytes() == want["sum"].tobytes()


def test_categorical_keys_keep_code_order_over_partitions(client, engine):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    levels = ["high", "low", "mid"]
    rng = np.random.default_rng(15)
    n = 6_000
    pdf = pd.DataFrame(
        {
            # Code order differs from value order; one category unused.
            "k": pd.Categorical(rng.choice(["z", "a", "m"], n), categories=["z", "a", "m", "b"]),
            "level": pd.Categorical(rng.choice(levels, n), categories=["low", "mid", "high"], ordered=True),
            "v": values(np.float64, n, seed=16),
        }
    )
    for keys in (["k"], ["level", "k"]):
        cols = [pdf[c] for c in keys]
        want_keys, want = engine.reduce(pdf["v"], ["sum", "count"], keys=cols if len(cols) > 1 else cols[0])
        for npartitions in (1, 3):
            ddf = dd.from_pandas(pdf, npartitions=npartitions)
            dcols = [ddf[c] for c in keys]
            got_keys, got = client.compute(
                gd.groupby_agg(dcols if len(dcols) > 1 else dcols[0], ddf["v"], ["sum", "count"])
            ).result()
            if len(cols) == 1:
                got_keys, want_keys_ = (got_keys,), (want_keys,)
            else:
                want_keys_ = want_keys
            assert [list(g) for g in got_keys] == [list(w) for w in want_keys_], (keys, npartitions)
            assert got["sum"].tobytes() == want["sum"].tobytes() and np.array_equal(got["count"], want["count"])
    assert list(engine.reduce(pdf["v"], "sum", keys=pdf["k"])[0]) == ["z", "a", "m"]


def test_several_value_columns_read_their_keys_once_and_line_up(client, engine):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    rng = np.random.default_rng(21)
    n = 30_001
    k = rng.integers(0, 400, n).astype(np.int64) << 34
    a = values(np.float32, n, seed=22)
    a[rng.random(n) < 0.1] = np.nan  # pandas' missing floats: nulls
    b = rng.integers(-(2**40), 2**40, n)
    c = pd.array(np.where(rng.random(n) < 0.2, None, rng.standard_normal(n)), dtype="Float64")
    # Key 0's rows of c are all null: its entry there is count 0.
    c[k == k.min()] = None
    pdf = pd.DataFrame({"k": k, "a": a, "b": b, "c": c})
    ops = ["sum", "mean", "max", "min", "count"]
    want = {col: engine.reduce(pdf[col], ops, keys=pdf["k"]) for col in "abc"}
    want_keys = want["a"][0]
    for npartitions, split_every in [(1, None), (5, 2)]:
        ddf = dd.from_pandas(pdf, npartitions=npartitions)
        got_keys, got = client.compute(gd.groupby_agg(ddf["k"], ddf[["a", "b", "c"]], ops, split_every=split_every)).result()
        assert got_keys.tolist() == want_keys.tolist() and set(got) == {"a", "b", "c"}
        for col in "abc":
            assert want[col][0].tolist() == want_keys.tolist()
            for op in ops:
                assert same_masked(got[col][op], want[col][1][op]), (col, op, npartitions)
        assert got["c"]["count"][0] == 0 and np.ma.getmaskarray(got["c"]["sum"])[0]
        # ops by column, as pandas' agg takes them: only those columns.
        got_keys, got = client.compute(
            gd.groupby_agg(ddf["k"], ddf[["a", "b", "c"]], {"c": ["sum", "count"], "a": "max"})
        ).result()
        assert list(got) == ["c", "a"] and got_keys.tolist() == want_keys.tolist()
        assert same_masked(got["a"], want["a"][1]["max"]) and same_masked(got["c"]["count"], want["c"][1]["count"])
    # Dask arrays in a list, chunked differently: results by position.
    da = pytest.importorskip("dask.array")
    dk = da.from_array(k, chunks=7_000)
    cols = [da.from_array(a, chunks=9_000), da.from_array(b, chunks=4_001)]
    got_keys, got = client.compute(gd.groupby_agg(dk, cols, ["sum", "max"], split_every=3)).result()
    for i, x in enumerate([a, b]):
        wk, w = engine.reduce(x, ["sum", "max"], keys=k)
        assert got_keys.tolist() == wk.tolist()
        for op in ["sum", "max"]:
            assert same_masked(got[i][op], w[op]), (i, op)


def test_several_value_columns_bad_arguments(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    ddf = dd.from_pandas(pd.DataFrame({"k": np.arange(10), "a": np.ones(10), "b": np.ones(10)}), npartitions=2)
    for values, ops, match in [
        (ddf["a"], {"a": "sum"}, "dict"),
        (ddf[["a", "b"]], {"x": "sum"}, "not among"),
        (ddf[["a", "b"]], {}, "no ops"),
        (ddf[["a", "b"]], {"a": []}, "no ops"),
        ([], "sum", "no value columns"),
        (ddf[["a", "b"]], {"a": "median"}, "unknown op"),
    ]:
        with pytest.raises(ValueError, match=match):
            gd.groupby_agg(ddf["k"], values, ops)
    other = dd.from_pandas(pd.DataFrame({"a": np.ones(10)}), npartitions=3)
    with pytest.raises(ValueError, match="partitions"):
        gd.groupby_agg(ddf["k"], [ddf["a"], other["a"]], "sum")


def test_null_categorical_keys_and_an_index_are_refused(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    pdf = pd.DataFrame({"k": pd.Categorical(["a", None, "b", "a"]), "v": [1.0, 2.0, 3.0, 4.0]})
    ddf = dd.from_pandas(pdf, npartitions=2)
    for values in [ddf["v"], ddf[["v"]]]:
        with pytest.raises(ValueError, match="null"):
            client.compute(gd.groupby_agg(ddf["k"], values, "sum")).result()
    index = gpulanes.default_engine().group_index(np.arange(4))
    with pytest.raises(ValueError, match="GroupIndex"):
        gd.groupby_agg(index, ddf["v"], "sum")


def test_string_and_float_key_columns_group_by_value_over_partitions(client, engine):
    # Each partition numbers its own strings and floats; the merge orders
    # the partitions' keys by value, so the result is one reduction's.
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    rng = np.random.default_rng(31)
    n = 30_007
    region = rng.choice(["north", "south", "east", "west", "", "Ω"], n)
    price = rng.choice([-0.0, 0.0, 0.25, -7.5, 1e-300, 3e300], n)
    vals = values(np.float64, n, seed=32)
    ops = ["sum", "max", "count"]
    df = pd.DataFrame({"region": region, "price": price, "amount": vals})
    for keys in (["region"], ["price"], ["region", "price"]):
        want_keys, want = engine.reduce(vals, ops, keys=[df[k].to_numpy() for k in keys])
        for npartitions in (1, 4):
            ddf = dd.from_pandas(df, npartitions=npartitions)
            got_keys, got = client.compute(gd.groupby_agg([ddf[k] for k in keys], ddf["amount"], ops, split_every=2)).result()
            assert [np.asarray(k).tolist() for k in got_keys] == [np.asarray(k).tolist() for k in want_keys], keys
            for op in ops:
                assert got[op].tobytes() == want[op].tobytes(), (keys, op, npartitions)


def test_all_null_values_have_no_value_and_narrow_values_are_widened(client, engine):
    # Values that are all null: no value (masked) for every op but count,
    # as Engine.reduce gives None; one all-null chunk among others is no
    # null result.
    x = np.ma.masked_array(np.arange(6.0), mask=True)
    dx = da.from_array(x, chunks=2, asarray=False)
    for op in ["sum", "mean", "max", "min"]:
        got = client.compute(gd.reduction(dx, op)).result()
        assert np.ma.is_masked(got) and engine.reduce(x, op) is None, op
    assert client.compute(gd.count(dx)).result() == 0
    y = np.ma.masked_array(np.arange(6.0), mask=[1, 1, 0, 1, 1, 1])
    assert client.compute(gd.sum(da.from_array(y, chunks=2, asarray=False))).result() == 2.0
    with pytest.raises(ValueError, match="zero-size"):
        client.compute(gd.max(da.zeros(0, chunks=1))).result()
    # Narrow values: the engine's bits and types, whole and by key.
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 50, 20_000)
    for dtype in (np.int8, np.uint16, np.bool_, np.float16, np.uint64):
        v = (rng.integers(0, 100, 20_000) if dtype != np.bool_ else rng.random(20_000) < 0.5).astype(dtype)
        dv = da.from_array(v, chunks=3_001)
        for op in ["sum", "mean", "max", "min", "count"]:
            got, want = client.compute(gd.reduction(dv, op)).result(), engine.reduce(v, op)
            assert got.dtype == np.asarray(want).dtype and got.tobytes() == np.asarray(want).tobytes(), (dtype, op)
        gk, got = client.compute(gd.groupby_agg(da.from_array(keys, chunks=3_001), dv, ["sum", "max"])).result()
        wk, want = engine.reduce(v, ["sum", "max"], keys=keys)
        assert np.array_equal(gk, wk)
        for op in ["sum", "max"]:
            assert got[op].dtype == want[op].dtype and got[op].tobytes() == want[op].tobytes(), (dtype, op)
