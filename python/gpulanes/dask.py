"""Dask array reductions whose results are the same bits as one in-process
reduction, whatever the chunking, ``split_every`` or number of workers.

Each reduction is a ``dask.array.reduction``: ``chunk`` turns a block into
partial states (``bytes``, one per kept position) on the worker's own
engine, ``combine`` merges states, ``aggregate`` merges and finalises. Only
the small states cross processes or the network, and since they hold exact
sums, the merge tree does not change the result.

Each worker process opens its own engine on first use
(:func:`gpulanes.default_engine`): the adapter the environment picks (its
GPU, or lavapipe on a machine without one). On a machine with several GPUs,
give each worker its own with ``WGPU_ADAPTER_NAME`` in its environment
(e.g. one ``dask worker`` process per GPU).

Reductions of a zero-size array follow NumPy: ``sum`` is 0, ``count`` 0,
``mean`` NaN, ``max``/``min`` raise ``ValueError``. Under ``nan="ignore"``,
a mean, max or min of values that are all NaN is NaN. Values that are all
null (every entry of masked chunks masked) have no value, as
``Engine.reduce`` gives ``None``: a masked result for every op but
``count`` (0). Values of narrow types (int8, int16, uint8, uint16, bool,
float16, uint64) are widened as ``Engine.reduce`` widens them, with the
same result types.

:func:`groupby_agg` reduces values per distinct key (or key tuple) the
same way, as a ``Delayed``: Dask arrays of keys and values, or columns of
one Dask DataFrame (read partition by partition as pandas columns, so
missing values are nulls and categorical keys name their groups); several
value columns read each chunk's keys once.
"""

from __future__ import annotations

import operator
from functools import partial
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import (
    _NULL_KEYS,
    GroupIndex,
    _array,
    _gpulanes,
    _restore_keys,
    _engine_values,
    _own_type,
    _result_dtype,
    default_engine,
    finalize,
    merge,
    merge_keyed_columns,
    state_info,
)

__all__ = ["sum", "mean", "max", "min", "count", "reduction", "groupby_agg"]

Axis = Union[None, int, Sequence[int]]


def _objects(items: list, shape: Tuple[int, ...]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(shape)


def _split(ndim: int, axis: Tuple[int, ...]) -> Tuple[list, list]:
    reduced = sorted(a % ndim for a in axis) if ndim else []
    kept = [i for i in range(ndim) if i not in reduced]
    return kept, reduced


def _chunk(
    x: Any,
    axis: Tuple[int, ...] = (),
    keepdims: bool = True,
    op: str = "sum",
    computing_meta: bool = False,
    **_: Any,
) -> np.ndarray:
    """A block's partial states, one per kept position (keepdims shape),
    each as ``(state, rows)``: rows counts the entries read, masked ones
    too, since a state counts no nulls and an all-null reduction has no
    value where an empty one has a sum of 0. Dask's meta probe
    (``computing_meta``) gets an empty object array and opens no engine."""
    # asanyarray: a masked chunk keeps its mask (masked entries are nulls).
    x = np.asanyarray(x)
    if computing_meta:
        return np.empty((0,) * x.ndim, dtype=object)
    eng = default_engine()
    kept, reduced = _split(x.ndim, axis)
    out_shape = tuple(1 if i in reduced else x.shape[i] for i in range(x.ndim))
    if not kept:
        return _objects([(eng.partial(x.ravel() if np.ma.isMaskedArray(x) else x, op), x.size)], out_shape)
    if np.ma.isMaskedArray(x) and np.ma.getmaskarray(x).any():
        raise ValueError("axis= takes no masked entries; pass .filled(...), or reduce over every axis")
    moved = np.ascontiguousarray(x.transpose(kept + reduced))
    lanes = int(np.prod([x.shape[i] for i in kept], dtype=np.int64))
    lane = int(np.prod([x.shape[i] for i in reduced], dtype=np.int64))
    offsets = np.arange(lanes + 1, dtype=np.int64) * lane
    states = eng.partial(moved, op, offsets=offsets) if lanes else []
    return _objects([(state, lane) for state in states], out_shape)


def _merge_states(s: np.ndarray, axis: Tuple[int, ...]) -> np.ndarray:
    """Merges the ``(state, rows)`` pairs of ``s`` along ``axis``
    (keepdims shape)."""
    kept, reduced = _split(s.ndim, axis)
    out_shape = tuple(1 if i in reduced else s.shape[i] for i in range(s.ndim))
    lines = s.transpose(kept + reduced).reshape(int(np.prod(out_shape, dtype=np.int64)), -1)
    merged = [(merge([state for state, _ in line]), int(np.sum([n for _, n in line], dtype=np.int64))) for line in lines]
    return _objects(merged, out_shape)


def _combine(
    s: Any, axis: Tuple[int, ...] = (), keepdims: bool = True, computing_meta: bool = False, **_: Any
) -> np.ndarray:
    if computing_meta:
        return np.empty((0,) * np.ndim(s), dtype=object)
    return _merge_states(np.asarray(s, dtype=object), axis)


def _aggregate(
    s: Any,
    axis: Tuple[int, ...] = (),
    keepdims: bool = False,
    op: str = "sum",
    nan: str = "propagate",
    in_dtype: Any = None,
    computing_meta: bool = False,
    **_: Any,
) -> np.ndarray:
    if computing_meta:
        return np.empty((0,) * np.ndim(s), dtype=_result_dtype(op, in_dtype))
    merged = _merge_states(np.asarray(s, dtype=object), axis)
    rt = _result_dtype(op, in_dtype)
    values = []
    nulls = []
    for state, rows in merged.ravel():
        seen = state_info(state)["len"]
        all_null = seen == 0 and rows > 0
        v = finalize(state, op, nan)
        if all_null and op != "count":
            # Values that were all null have no value (as Engine.reduce
            # gives None): a masked entry.
            v = 0
        elif v is None:
            # No value: a mean of nothing, or values that were all NaN
            # under nan="ignore", is NaN (as numpy.nanmean); max/min of
            # nothing at all have no identity (as numpy.max).
            if op != "mean" and seen == 0:
                raise ValueError(f"zero-size array to reduction operation {op} which has no identity")
            v = np.nan
        values.append(v)
        nulls.append(all_null and op != "count")
    out = np.array(values, dtype=rt).reshape(merged.shape)
    if any(nulls):
        out = np.ma.masked_array(out, mask=np.array(nulls).reshape(merged.shape))
    if not keepdims:
        kept, _reduced = _split(out.ndim, axis)
        out = out.reshape(tuple(out.shape[i] for i in kept))
    return out


def reduction(
    x: Any,
    op: str,
    axis: Axis = None,
    *,
    nan: str = "propagate",
    keepdims: bool = False,
    split_every: Any = None,
) -> Any:
    """``op`` (sum, mean, max, min, count) over a Dask array along ``axis``
    (``None``: all axes), as a lazy Dask array of the op's result type."""
    import dask.array as da

    if op not in ("sum", "mean", "max", "min", "count"):
        raise ValueError(f"unknown op {op!r}: expected sum, mean, max, min or count")
    if nan not in ("propagate", "ignore"):
        raise ValueError(f"unknown NaN policy {nan!r}: expected propagate or ignore")
    if not isinstance(x, da.Array):
        x = da.asarray(x)
    if np.dtype(x.dtype).kind not in "iubf" or np.dtype(x.dtype).itemsize > 8:
        raise ValueError(f"unsupported dtype {x.dtype}: expected integers, bools or floats of up to 64 bits")
    rt = _result_dtype(op, x.dtype)
    meta_ndim = 0 if axis is None else x.ndim - (1 if isinstance(axis, (int, np.integer)) else len(axis))
    if keepdims:
        meta_ndim = x.ndim
    return da.reduction(
        x,
        partial(_chunk, op=op),
        partial(_aggregate, op=op, nan=nan, in_dtype=x.dtype),
        combine=_combine,
        axis=axis,
        keepdims=keepdims,
        dtype=rt,
        split_every=split_every,
        concatenate=True,
        meta=np.empty((0,) * meta_ndim, dtype=rt),
        name=f"gpulanes-{op}",
    )


def sum(x: Any, axis: Axis = None, *, nan: str = "propagate", keepdims: bool = False, split_every: Any = None) -> Any:
    """Exact sum (same bits as ``Engine.sum`` over the whole array)."""
    return reduction(x, "sum", axis, nan=nan, keepdims=keepdims, split_every=split_every)


def mean(x: Any, axis: Axis = None, *, nan: str = "propagate", keepdims: bool = False, split_every: Any = None) -> Any:
    """Exact mean: the exact sum over the count, rounded once."""
    return reduction(x, "mean", axis, nan=nan, keepdims=keepdims, split_every=split_every)


def max(x: Any, axis: Axis = None, *, nan: str = "propagate", keepdims: bool = False, split_every: Any = None) -> Any:
    """Largest value."""
    return reduction(x, "max", axis, nan=nan, keepdims=keepdims, split_every=split_every)


def min(x: Any, axis: Axis = None, *, nan: str = "propagate", keepdims: bool = False, split_every: Any = None) -> Any:
    """Smallest value."""
    return reduction(x, "min", axis, nan=nan, keepdims=keepdims, split_every=split_every)


def count(x: Any, axis: Axis = None, *, nan: str = "propagate", keepdims: bool = False, split_every: Any = None) -> Any:
    """Number of values (non-NaN ones under ``nan="ignore"``)."""
    return reduction(x, "count", axis, nan=nan, keepdims=keepdims, split_every=split_every)


_KIND_OP = {"sum": "sum", "mean": "sum", "count": "sum", "max": "max", "min": "min"}


def _is_frame(obj: Any) -> bool:
    """True for a Dask DataFrame (several columns), not a Series (whose
    attribute lookup answers ``columns`` too)."""
    return getattr(obj, "ndim", None) == 2 and hasattr(obj, "columns") and hasattr(obj, "to_delayed")


def _index_keys(keys: Any) -> Any:
    # asanyarray: a masked chunk keeps its mask (its masked entries are nulls).
    return [np.asanyarray(k) for k in keys] if isinstance(keys, list) else np.asanyarray(keys)


def _keyed_partials(keys: Any, column_ops: List[List[str]], of_columns: bool, *values: Any) -> list:
    """Per-key states of one chunk, one ``(keys, bytes)`` a value column:
    the keys (an array, or a tuple of them) and, from one pass, the state
    columns of every kind its ops need (:class:`gpulanes.StateColumns`'
    bytes, as one uint8 array). The keys are read once
    (:meth:`gpulanes.Engine.group_index`), so every column's states have
    every key of the chunk. Pandas columns (``of_columns``) go as they
    are, read as ``Engine.reduce`` reads a pandas column (its Arrow
    export: nulls, pandas' missing floats, categorical keys); array chunks
    through ``asanyarray``, so masked entries stay nulls."""
    engine = default_engine()
    index = engine.group_index(keys if of_columns else _index_keys(keys))
    out = []
    for v, ops in zip(values, column_ops):
        v, _ = _engine_values(v if of_columns else np.asanyarray(v))
        distinct, blob = engine._native.partial_by_index_columns(v, index._native, list(ops))
        out.append((_restore_keys(distinct, index._restore), blob))
    return out


# Keyed states travel as state columns: ``(keys, bytes)``, every key's
# states of every kind a column needs in one uint8 array. Distributed
# sends an array as one frame, where a list of bytes objects costs a frame
# (and a Python object) a key.


def _numpy_dtype(dtype: Any) -> np.dtype:
    """The NumPy dtype of a column's dtype (a pandas extension dtype's
    NumPy counterpart; float64 where there is none)."""
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(getattr(dtype, "numpy_dtype", np.float64))


def _merge_columns(*parts: Tuple[Any, np.ndarray]) -> Tuple[Any, np.ndarray]:
    """Keyed state columns of several chunks merged by key."""
    return merge_keyed_columns(parts)


def _groups(keys: Any) -> int:
    """Keys in merged keys (an array, or a tuple of arrays)."""
    return len(keys[0] if isinstance(keys, tuple) else keys)


def _finalize_columns(
    merged: list,
    column_ops: List[List[str]],
    singles: List[bool],
    names: Optional[list],
    nan: str,
    dtypes: List[np.dtype],
    restore: Any = None,
) -> Any:
    """``(keys, result)`` from each value column's merged state columns:
    one column's result (an array, or a dict of them by op), or with
    ``names`` a dict of them by column name."""
    results = []
    keys = None
    for (keys, blob), ops, single, dtype in zip(merged, column_ops, singles, dtypes):
        out = {
            op: _own_type(_array(*_gpulanes.finalize_keyed_columns(blob, op, nan)), op, _result_dtype(op, dtype))
            if len(blob) and _groups(keys)
            else np.zeros(0, dtype=_result_dtype(op, dtype))
            for op in ops
        }
        results.append(out[ops[0]] if single else out)
    if keys is None:
        keys = np.zeros(0, dtype=np.int64)
    if restore is not None:
        keys = restore(keys)
    return keys, (results[0] if names is None else dict(zip(names, results)))


def _value_columns(values: Any, ops: Any) -> Tuple[List[Any], Optional[list], List[Any]]:
    """The value columns of :func:`groupby_agg`, their names (``None`` for
    one column) and each one's ops (as given: a name or a sequence)."""
    if _is_frame(values):
        names: Optional[list] = list(values.columns)
        columns = [values[c] for c in names]
    elif isinstance(values, (list, tuple)):
        names = list(range(len(values)))
        columns = list(values)
    else:
        if isinstance(ops, dict):
            raise ValueError("ops as a dict names value columns: give a list of columns or a DataFrame")
        return [values], None, [ops]
    if not columns:
        raise ValueError("no value columns given")
    if not isinstance(ops, dict):
        return columns, names, [ops] * len(columns)
    unknown = [c for c in ops if c not in names]
    if unknown:
        raise ValueError(f"ops name columns {unknown!r} that are not among the values' columns {names!r}")
    if not ops:
        raise ValueError("no ops given")
    picked = [names.index(c) for c in ops]
    return [columns[i] for i in picked], list(ops), list(ops.values())


def groupby_agg(
    keys: Any,
    values: Any,
    ops: Any = "sum",
    *,
    nan: str = "propagate",
    split_every: Optional[int] = None,
) -> Any:
    """``ops`` over ``values`` per distinct key of ``keys`` (1-D Dask arrays
    of the same length, or two columns of one Dask DataFrame such as
    ``ddf["customer"], ddf["amount"]``; keys int32, uint32 or int64, or a
    list of key columns for key tuples, whose distinct keys come back as a
    tuple of arrays), as a
    ``Delayed`` of ``(distinct_keys, result)`` like ``Engine.reduce(values,
    ops, keys=keys)``, with the same bits whatever the chunking, the
    partitioning or the merge tree: each chunk gives per-key states on its
    worker, states are merged ``split_every`` (default 8) at a time, and the
    last merge finalises. Two columns of one DataFrame go partition by
    partition as pandas columns, read as ``Engine.reduce`` reads a pandas
    column: missing values (pandas' NaN in float columns, ``pd.NA``) are
    nulls and categorical keys name their groups by category. Null values
    (those, and masked entries of a masked array chunk) are skipped and
    their keys kept (count 0, other ops masked); keys must not be null.

    Several value columns (a list of columns, or a DataFrame such as
    ``ddf[["amount", "units"]]``) are reduced by keys each chunk reads once
    (:meth:`gpulanes.Engine.group_index`), and ``result`` is a dict by
    column name (list position for a list) of what one column gives;
    ``ops`` may then be a dict from column name to ops, as pandas' ``agg``
    takes it, and only those columns are reduced. Every column's result
    has an entry for every key, in the order of ``distinct_keys``."""
    import dask.array as da

    if isinstance(keys, GroupIndex):
        raise ValueError("groupby_agg takes Dask key columns, not a GroupIndex (each chunk indexes its own keys)")
    several = isinstance(keys, (list, tuple))
    key_list = list(keys) if several else [keys]
    if not key_list:
        raise ValueError("no key columns given")
    value_list, names, given_ops = _value_columns(values, ops)
    for o in given_ops:
        _checked_ops(o, nan, split_every)

    def pieces(per_column: List[Any]) -> List[Any]:
        # One piece of keys a chunk: a list of the columns' pieces for
        # several key columns.
        return [list(p) for p in zip(*per_column)] if several else list(per_column[0])

    if all(hasattr(k, "to_dask_array") for k in key_list) and all(hasattr(v, "to_dask_array") for v in value_list):
        for k in key_list + value_list:
            if k.npartitions != value_list[0].npartitions:
                raise ValueError(
                    f"columns in {k.npartitions} partitions and in {value_list[0].npartitions}: "
                    "give columns of one DataFrame"
                )
        # Categorical keys go by code, which all partitions share once the
        # categories are known, so the merge keeps code order; the codes
        # become categories at the end.
        restores = []
        for i, k in enumerate(key_list):
            if str(k.dtype) == "category":
                if not k.cat.known:
                    k = k.cat.as_known()
                restores.append(partial(_categories_of, k.cat.categories))
                key_list[i] = k.cat.codes.map_partitions(_non_null_codes)
            else:
                restores.append(None)
        kb = pieces([k.to_delayed() for k in key_list])
        return _groupby_parts(
            kb,
            [v.to_delayed() for v in value_list],
            True,
            given_ops,
            names,
            nan,
            split_every,
            [_numpy_dtype(v.dtype) for v in value_list],
            partial(_restore_columns, restores, several),
        )
    def dask_array(column: Any) -> Any:
        return da.asarray(column.to_dask_array(lengths=True) if hasattr(column, "to_dask_array") else column)

    arrays = [dask_array(v) for v in value_list]
    key_arrays = [dask_array(k) for k in key_list]
    first = arrays[0]
    for a in arrays + key_arrays:
        if a.ndim != 1 or first.ndim != 1 or a.shape != first.shape:
            raise ValueError(f"keys and values {a.shape} and {first.shape} must be 1-D of one length")
    kb = pieces([k.rechunk(first.chunks).to_delayed().ravel() for k in key_arrays])
    vbs = [a.rechunk(first.chunks).to_delayed().ravel() for a in arrays]
    return _groupby_parts(kb, vbs, False, given_ops, names, nan, split_every, [np.dtype(a.dtype) for a in arrays])


def _checked_ops(ops: Union[str, Sequence[str]], nan: str, split_every: Optional[int]) -> list:
    """The ops of :func:`groupby_agg` as a list, its arguments checked."""
    op_list = [str(o) for o in ([ops] if isinstance(ops, str) else ops)]
    if not op_list:
        raise ValueError("no ops given")
    for op in op_list:
        if op not in _KIND_OP:
            raise ValueError(f"unknown op {op!r}: expected sum, mean, max, min or count")
    if nan not in ("propagate", "ignore"):
        raise ValueError(f"unknown NaN policy {nan!r}: expected propagate or ignore")
    if split_every is not None and int(split_every) < 2:
        raise ValueError("split_every must be at least 2")
    return op_list


def _non_null_codes(codes: Any) -> Any:
    """A partition's categorical codes, refused where a key is null (code
    -1), as ``Engine.reduce`` refuses null keys."""
    if len(codes) and (np.asarray(codes) < 0).any():
        raise ValueError(_NULL_KEYS)
    return codes


def _categories_of(categories: Any, codes: np.ndarray) -> np.ndarray:
    return np.asarray(categories.take(codes))


def _restore_columns(restores: List[Any], several: bool, keys: Any) -> Any:
    """The merged keys with each key column's ``restore`` (or ``None``)
    applied: a tuple of columns for ``several``, else one."""
    cols = list(keys) if several else [keys]
    out = tuple(c if r is None else r(c) for c, r in zip(cols, restores))
    return out if several else out[0]


def _groupby_parts(
    kb: Any,
    vbs: List[Any],
    of_columns: bool,
    given_ops: List[Any],
    names: Optional[list],
    nan: str,
    split_every: Optional[int],
    dtypes: List[np.dtype],
    restore: Any = None,
) -> Any:
    """The Delayed of :func:`groupby_agg` over delayed pieces of keys and
    of each value column (pieces of one length, chunk by chunk): one task
    a chunk gives every value column's state columns, each value column
    has its own tree of tasks merging them ``split_every`` at a time, and
    the last task finalises; ``restore`` maps the merged keys to the
    caller's."""
    from dask import delayed

    every = 8 if split_every is None else int(split_every)
    column_ops = [_checked_ops(o, nan, split_every) for o in given_ops]
    singles = [isinstance(o, str) for o in given_ops]
    chunks = [delayed(_keyed_partials, pure=True)(k, column_ops, of_columns, *vs) for k, *vs in zip(kb, *vbs)]
    # One merge tree a value column, so the trees run side by side.
    merged = []
    for i in range(len(column_ops)):
        parts = [delayed(operator.getitem, pure=True)(c, i) for c in chunks]
        while len(parts) > 1:
            parts = [delayed(_merge_columns, pure=True)(*parts[i : i + every]) for i in range(0, len(parts), every)]
        merged.append(parts[0])
    return delayed(_finalize_columns, pure=True)(merged, column_ops, singles, names, nan, dtypes, restore)
