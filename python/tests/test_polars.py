"""Polars columns and frames, read through the Arrow PyCapsule interface
as PyArrow reads them (a view of their buffers): every key form (strings,
categoricals, floats, narrow integers, dates) groups as its PyArrow
counterpart does, narrow values widen, nulls stay nulls, and a DataFrame
is several value columns."""

import numpy as np
import pytest

pl = pytest.importorskip("polars")
pa = pytest.importorskip("pyarrow")

from test_group_index import OPS, same_result  # noqa: E402


def test_polars_keys_group_as_their_arrow_columns(engine):
    rng = np.random.default_rng(12)
    n = 10_007
    x = rng.standard_normal(n)
    words = rng.choice(["north", "south", "", "é", "a\x00"], n).tolist()
    days = rng.integers(0, 40, n)
    forms = [
        pl.Series("k", words),
        pl.Series("k", words).cast(pl.Categorical),
        pl.Series("k", rng.choice([-0.0, 0.0, 1.5, -2.5, np.inf], n)),
        pl.Series("k", rng.integers(-100, 100, n), dtype=pl.Int8),
        pl.Series("k", rng.integers(0, 60_000, n), dtype=pl.UInt16),
        pl.Series("k", days).cast(pl.Date),
        pl.Series("k", rng.integers(0, 2, n).astype(bool)),
    ]
    for keys in forms:
        got = engine.reduce(x, OPS, keys=keys)
        want = engine.reduce(x, OPS, keys=keys.to_arrow())
        if keys.dtype == pl.Categorical:
            # Categories come back by value; the Arrow dictionary's codes
            # follow first appearance, as the categories do.
            assert sorted(got[0].tolist()) == sorted(set(words))
        else:
            assert np.asarray(got[0]).tolist() == np.asarray(want[0]).tolist(), keys.dtype
        same_result((np.asarray(want[0]), got[1]), (np.asarray(want[0]), want[1]))
    with pytest.raises(ValueError, match="null"):
        engine.reduce(x[:3], "sum", keys=pl.Series([1, None, 1]))
    if hasattr(pl, "Int128"):
        with pytest.raises(ValueError):
            engine.reduce(x[:3], "sum", keys=pl.Series([1, 2, 1], dtype=pl.Int128))


def test_polars_values_and_frames(engine):
    rng = np.random.default_rng(13)
    n = 5_003
    k = pl.Series("k", rng.choice(["x", "y", "z"], n))
    small = pl.Series("s", rng.integers(-128, 128, n), dtype=pl.Int8)
    with_nulls = pl.Series("f", np.where(rng.random(n) < 0.2, None, rng.standard_normal(n)).tolist(), dtype=pl.Float64)
    assert engine.reduce(small, "max").dtype == np.int8
    assert engine.reduce(small, "max") == small.max()
    assert engine.reduce(with_nulls, "count") == with_nulls.count()
    got = engine.reduce(with_nulls, OPS, keys=k)
    want = engine.reduce(with_nulls.to_arrow(), OPS, keys=k.to_arrow())
    same_result((np.asarray(want[0]), got[1]), (np.asarray(want[0]), want[1]))
    frame = pl.DataFrame({"s": small, "f": with_nulls})
    keys, by_column = engine.reduce(frame, {"s": ["max", "sum"], "f": "mean"}, keys=k)
    assert keys.tolist() == ["x", "y", "z"]
    assert by_column["s"]["max"].dtype == np.int8
    assert by_column["f"].tobytes() == engine.reduce(with_nulls.to_arrow(), "mean", keys=k.to_arrow())[1].tobytes()
