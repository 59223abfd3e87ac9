"""gpulanes: exact, order-independent GPU reductions for NumPy and Arrow data.

Sums are exact (the exact sum rounded once to the result type), so results
are the same bits whatever the order, chunking, device or number of machines;
partial states (``bytes``) of any split of the data merge into the bits of
one reduction. See ``gpulanes.dask`` for Dask arrays.

Inputs
    * NumPy arrays of float32, float64, int32, uint32 or int64 (int8,
      int16, uint8, uint16, bool, float16 and uint64 are widened exactly
      first, and max/min come back in their own type). Contiguous
      arrays are read in place (no copy); strided or unaligned ones are
      copied once (``numpy.ascontiguousarray``). Partitioned, ``axis`` and
      keyed reductions read C order (keys and values pair up as their
      ``ravel()`` does), so a Fortran-ordered array is copied there.
    * Objects with the Arrow PyCapsule interface (``__arrow_c_array__`` or
      ``__arrow_c_stream__``: PyArrow arrays and chunked arrays, Polars
      series and DataFrames, ...; those that are not PyArrow are viewed
      as PyArrow, so the same key and type rules apply). One chunk
      without nulls is read in place, and so are
      several chunks without nulls of 1 MiB or more on average in a whole
      reduction (one pass per chunk, states merged: the same bits). Nulls
      are SQL NULL: skipped, not counted, and a partition whose values are
      all null has no value (``None``); the kernels read no validity
      bitmap, so the non-null values are gathered into one buffer first (a
      copy), as are smaller chunks and the chunks of a partitioned
      reduction.
    * NumPy masked arrays: masked entries are NULL, as Arrow nulls are
      (never the values under the mask); 1-D ones with masked entries go
      through PyArrow (``pyarrow.array(data, mask=mask)``, a copy), and
      ``axis`` reductions refuse masked entries.
    * pandas Series export themselves through the Arrow interface, where
      pandas counts a float NaN as missing: their NaNs arrive as NULL
      (skipped whatever ``nan`` says, refused by keyed reductions). Pass
      ``series.to_numpy()`` to keep NaN as NaN.
    * Anything else ``numpy.asarray`` accepts (a copy).

NaN is not NULL: ``nan="propagate"`` (NumPy's rule) makes any NaN the
result; ``nan="ignore"`` skips NaNs (and ``count`` does not count them).

Result types follow NumPy: float sums keep the input's type, integer sums
are int64 (``OverflowError`` when the exact sum does not fit), means of
integers are float64, ``count`` is int64. ``sum`` of nothing is 0;
``mean``/``max``/``min`` of nothing are ``None`` (in arrays: masked).

Keyed reductions (group-by): ``Engine.reduce(x, ops, keys=k)`` gives the
distinct keys ascending and one result per key; keys are integers of any
width, bools, categoricals (grouped by code), or values of any type that
orders (floats, dates, strings, bytes; NumPy, pandas and PyArrow), each
returned in its own type; ``Engine.group_index(k)`` reads the keys once for several value
columns (``keys=index``); ``Engine.partial(x, op, keys=k)``,
:func:`merge_keyed` and :func:`finalize_keyed` carry them across machines
(``gpulanes.dask.groupby_agg`` for Dask arrays).

Errors: ``ValueError`` for bad input (dtype, partitions, corrupt or foreign
state bytes), the ``GpuError`` family for device problems,
``TimeoutError`` for missed deadlines.

The GIL is released while the GPU works, so threads reduce concurrently.
An input read in place must not be written by another thread while a
reduction reads it (its value would be unspecified; nothing else breaks).
"""

from __future__ import annotations

import asyncio
import operator
import concurrent.futures
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union, overload

import numpy as np

from . import _gpulanes
from ._gpulanes import (
    DeviceLostError,
    GpuError,
    GpuOutOfMemoryError,
    NoAdapterError,
    QueueFullError,
)

__version__ = "0.1.0"

__all__ = [
    "Engine",
    "GroupIndex",
    "Lanes",
    "LaneFuture",
    "info",
    "merge",
    "finalize",
    "state_info",
    "merge_keyed",
    "finalize_keyed",
    "merge_keyed_columns",
    "finalize_keyed_columns",
    "default_engine",
    "GpuError",
    "NoAdapterError",
    "DeviceLostError",
    "GpuOutOfMemoryError",
    "QueueFullError",
    "OPS",
]

OPS = ("sum", "mean", "max", "min", "count")


def _scalar(values: np.ndarray, valid: Optional[np.ndarray]) -> Any:
    """The one value of a whole reduction: a NumPy scalar, or None."""
    if valid is not None and not valid[0]:
        return None
    return values[0]


def _array(values: np.ndarray, valid: Optional[np.ndarray]) -> np.ndarray:
    """Per-partition values: a plain array, or a masked array where some
    partition has no value."""
    if valid is None:
        return values
    return np.ma.masked_array(values, mask=~valid)


_KEY_DTYPES = (np.dtype(np.int32), np.dtype(np.uint32), np.dtype(np.int64))

_Restore = Optional[Callable[[np.ndarray], Any]]


_NULL_KEYS = "keys must not be null: drop the rows whose key is null, or fill their keys"


def _widened(arr: np.ndarray) -> Tuple[Any, _Restore]:
    """NumPy integer or bool keys of a type the engine does not group (or
    in the other byte order), as keys it groups: in native order, and
    widened exactly (uint64 to int64, narrower ones to int32); and the way
    back to their own type."""
    own = arr.dtype
    native = arr if own.isnative else arr.astype(own.newbyteorder("="))
    back = (lambda d: d.astype(own))
    if native.dtype in _KEY_DTYPES:
        return native, (None if own.isnative else back)
    if native.dtype.itemsize == 8:
        if native.dtype.kind == "u" and native.size and np.ma.getdata(native).max() > np.iinfo(np.int64).max:
            raise ValueError("uint64 keys above 2**63 - 1 are not supported: the engine groups int64 at most")
        return native.astype(np.int64), back
    return native.astype(np.int32), back


def _categorical(codes: np.ndarray, categories: Any) -> Tuple[Any, _Restore]:
    """Categorical keys as their codes (pandas' -1, a missing value, is a
    null key: refused), and the way back to the categories' values."""
    if (codes < 0).any():
        raise ValueError(_NULL_KEYS)
    return codes.astype(np.int32), lambda d: np.asarray(categories.take(d))


_FLOAT_ORDER = np.int64(0x7FFF_FFFF_FFFF_FFFF)


def _float_keys(arr: np.ndarray) -> Tuple[Any, _Restore]:
    """Float keys as int64s that order as the floats do, and the way back:
    the bits of each float64 with a negative one's magnitude bits inverted
    (a bijection, so every key comes back exactly). -0.0 groups with 0.0,
    as it compares equal to it; NaN, pandas' missing value, is a null key
    and refused."""
    if arr.dtype.itemsize > 8:
        raise ValueError(
            f"keys of dtype {arr.dtype} are not grouped: float64 is the widest float key (cast them, knowing they round)"
        )
    wide = arr.astype(np.float64)
    if np.isnan(wide).any():
        raise ValueError("NaN keys are not grouped (NaN is a missing key in pandas): drop or fill them")
    bits = (wide + 0.0).view(np.int64)  # + 0.0 turns -0.0 into 0.0
    ordered = np.where(bits < 0, bits ^ _FLOAT_ORDER, bits)
    return ordered, lambda d: np.where(d < 0, d ^ _FLOAT_ORDER, d).view(np.float64).astype(arr.dtype)


def _numbered_by_value(arr: np.ndarray) -> Tuple[Any, _Restore]:
    """Keys that are values, not numbers the engine groups (strings, bytes,
    Python objects that order: dates, decimals), numbered by their rank
    among the distinct keys, and the way back to the values. pandas'
    hash factorisation where pandas is installed, NumPy's sort otherwise.
    None (a missing value) is a null key and refused, as are keys that do
    not order."""
    shape = arr.shape
    arr = arr.reshape(-1)
    try:
        try:
            import pandas as pd
        except ImportError:
            uniques, codes = np.unique(arr, return_inverse=True)
        else:
            codes, uniques = pd.factorize(arr, sort=True)
            if (codes < 0).any():
                raise ValueError(_NULL_KEYS)
        uniques = np.asarray(uniques)
        if uniques.dtype == object and len({type(u) for u in uniques.tolist()}) > 1:
            sorted(uniques.tolist())  # pandas orders mixed types its own way
    except TypeError as e:
        raise ValueError(f"keys that do not order or cannot be hashed: {e}") from None
    if arr.dtype.kind in "US":
        uniques = uniques.astype(arr.dtype)
    width = np.int32 if len(uniques) < 2**31 else np.int64
    return codes.reshape(shape).astype(width), lambda d: uniques[d]


def _arrow_by_value(keys: Any) -> Tuple[Any, _Restore]:
    """PyArrow strings or binaries numbered by rank, as
    :func:`_numbered_by_value` does, without Python objects: Arrow's hash
    encoding, its dictionary sorted once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if keys.null_count:
        raise ValueError(_NULL_KEYS)
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    encoded = pc.dictionary_encode(keys)
    order = pc.array_sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    values = encoded.dictionary.take(pa.array(order)).to_numpy(zero_copy_only=False)
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)] if len(order) else np.zeros(len(encoded), np.int32)
    return codes, lambda d: values[d]


def _list_keys(keys: Sequence[Any]) -> np.ndarray:
    """A Python list of keys as one key column: integers and bools as
    NumPy makes them, floats as float64 where every integer among them is
    one exactly, anything else (strings, bytes, mixed numbers, objects) as
    objects, since NumPy's fixed-width strings drop trailing NULs."""
    arr = np.asarray(keys)
    if arr.ndim != 1:
        raise ValueError(f"keys of shape {arr.shape}: a list of keys is one key column; give several as a list of arrays")
    if arr.dtype.kind in "iub":
        return arr
    # NumPy makes integers past int64 floats: keys are floats only where
    # some key is one, and every integer among them is a float exactly.
    if (
        arr.dtype.kind == "f"
        and any(isinstance(k, (float, np.floating)) for k in keys)
        and all(float(k) == k for k in keys if isinstance(k, (int, np.integer)))
    ):
        return arr
    out = np.empty(len(keys), dtype=object)
    out[:] = list(keys)
    return out


def _arrow_ticks(keys: Any) -> Tuple[Any, _Restore]:
    """PyArrow dates, times, timestamps and durations as their integer
    ticks (exact, whatever the unit), and the way back: dates, timestamps
    and durations as NumPy datetime64/timedelta64 of their unit (zoned
    timestamps as datetimes in their zone), times of day as timedelta64
    since midnight (no precision is lost)."""
    import pyarrow as pa

    arrow_type = keys.type
    if keys.null_count:
        raise ValueError(_NULL_KEYS)
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    ints = pa.int32() if arrow_type.bit_width == 32 else pa.int64()
    ticks = keys.view(ints).to_numpy(zero_copy_only=False)

    def restore(d: np.ndarray) -> Any:
        if pa.types.is_time(arrow_type):
            return np.asarray(d).astype(f"timedelta64[{arrow_type.unit}]")
        back = pa.array(np.asarray(d).astype(ints.to_pandas_dtype()), ints).view(arrow_type)
        if pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None:
            return np.array(back.to_pylist(), dtype=object)
        return back.to_numpy(zero_copy_only=False)

    return ticks, restore


def _ordered_keys(arr: np.ndarray) -> Tuple[Any, _Restore]:
    """NumPy keys of a kind the engine does not group, as int keys that
    order as they do: floats by their bits, dates and durations as their
    int64 ticks (NaT is a null key), strings and objects by rank."""
    kind = arr.dtype.kind
    if not arr.dtype.isnative and kind in "fMm":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if kind == "f":
        return _float_keys(arr)
    if kind in "Mm":
        ticks = arr.view(np.int64)
        if (ticks == np.iinfo(np.int64).min).any():
            raise ValueError(_NULL_KEYS)
        return ticks, lambda d: d.view(arr.dtype)
    if kind in "USO":
        return _numbered_by_value(arr)
    raise ValueError(f"keys of dtype {arr.dtype} are not grouped: keys are integers, bools, floats, dates, strings or categories")


def _unviewed(arr: Any) -> Any:
    """PyArrow string or binary views as large strings or binaries (which
    Arrow's hashing kernels take); other arrays as they are."""
    import pyarrow as pa

    if pa.types.is_string_view(arr.type):
        return arr.cast(pa.large_string())
    if pa.types.is_binary_view(arr.type):
        return arr.cast(pa.large_binary())
    return arr


def _as_pyarrow(obj: Any) -> Any:
    """``obj`` as a PyArrow chunked array (a column) or table (several)
    when it is neither NumPy, pandas nor PyArrow but speaks the Arrow
    PyCapsule interface (Polars, ...): a view of its buffers, so every
    PyArrow rule applies to it. Else ``obj`` itself."""
    module = type(obj).__module__
    if module.startswith(("numpy", "pandas", "pyarrow")) or isinstance(obj, np.ndarray):
        return obj
    if not (hasattr(obj, "__arrow_c_stream__") or hasattr(obj, "__arrow_c_array__")):
        return obj
    try:
        import pyarrow as pa
    except ImportError:
        return obj
    if hasattr(obj, "columns") and hasattr(obj, "__arrow_c_stream__"):
        try:
            return pa.table(obj)
        except (TypeError, ValueError, pa.ArrowException):
            pass
    try:
        return pa.chunked_array(obj) if hasattr(obj, "__arrow_c_stream__") else pa.array(obj)
    except pa.ArrowException as e:
        raise ValueError(f"an Arrow column PyArrow cannot read: {e}") from None


def _engine_keys(keys: Any) -> Tuple[Any, _Restore]:
    """Keys as the engine takes them, and how to turn the distinct keys
    it returns back into the caller's kind of key (``None``: as they
    come).

    * Integer and bool keys of other types (NumPy, pandas and PyArrow
      int8/int16 codes, uint8, uint16, uint64, bool; pandas' nullable
      ones without a missing value) are widened exactly to int32 or int64
      and the distinct keys come back as NumPy arrays of their own type;
      uint64 keys above the int64 range are refused.
    * Categorical keys (a pandas categorical Series, ``Categorical`` or
      ``CategoricalIndex``, a PyArrow dictionary array or chunked array)
      are grouped by their codes, and the distinct keys come back as the
      categories' values, in code order.
    * Other keys are grouped by value and come back as their values,
      ascending: floats (exactly; -0.0 with 0.0; NaN refused as a null
      key), dates and durations, strings and bytes (NumPy, pandas object
      and string Series, PyArrow), Python objects that order.
    """
    keys = _as_pyarrow(keys)
    dtype = getattr(keys, "dtype", None)
    if dtype is not None and str(dtype) == "category":
        if hasattr(keys, "cat"):
            return _categorical(np.asarray(keys.cat.codes), keys.cat.categories)
        if hasattr(keys, "codes") and hasattr(keys, "categories"):
            return _categorical(np.asarray(keys.codes), keys.categories)
    arrow_type = getattr(keys, "type", None)
    if arrow_type is not None and type(keys).__module__.startswith("pyarrow"):
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(keys, pa.ChunkedArray) and pa.types.is_dictionary(arrow_type):
            keys = keys.unify_dictionaries().combine_chunks()
        if pa.types.is_dictionary(arrow_type):
            if keys.indices.null_count:
                raise ValueError(_NULL_KEYS)
            codes = keys.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            dictionary = _unviewed(keys.dictionary)
            if dictionary.null_count:  # a code naming a null value is a null key
                null_codes = np.flatnonzero(dictionary.is_null().to_numpy(zero_copy_only=False))
                if np.isin(codes, null_codes).any():
                    raise ValueError(_NULL_KEYS)
            if len(dictionary) and pc.count_distinct(dictionary, mode="all").as_py() < len(dictionary):
                # A value named by several codes is one key: each code
                # becomes the first code of its value.
                ids = pc.dictionary_encode(dictionary).indices.to_numpy(zero_copy_only=False)
                _, first = np.unique(ids, return_index=True)
                codes = first[ids][codes]
            return codes, lambda d: dictionary.take(pa.array(d)).to_numpy(zero_copy_only=False)
        if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type):
            if arrow_type in (pa.int32(), pa.uint32(), pa.int64()):
                return keys, None
            if keys.null_count:
                raise ValueError(_NULL_KEYS)
            return _widened(np.asarray(keys.to_numpy(zero_copy_only=False)))
        keys = _unviewed(keys)
        arrow_type = keys.type
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
            return _arrow_by_value(keys)
        if pa.types.is_temporal(arrow_type) and not pa.types.is_interval(arrow_type):
            return _arrow_ticks(keys)
        if keys.null_count:
            raise ValueError(_NULL_KEYS)
        return _ordered_keys(np.asarray(keys.to_numpy(zero_copy_only=False)))
    if type(dtype).__name__ == "ArrowDtype" and hasattr(dtype, "pyarrow_dtype"):
        # A pandas Series backed by PyArrow: its Arrow data, read as
        # PyArrow keys are.
        import pyarrow as pa

        return _engine_keys(pa.array(keys))
    numpy_dtype = getattr(dtype, "numpy_dtype", None)
    if numpy_dtype is not None and not isinstance(dtype, np.dtype):
        # A pandas extension dtype (Int8, UInt64, boolean, ...): nulls are
        # null keys; without them, its NumPy counterpart.
        if np.dtype(numpy_dtype).kind in "iub" and np.dtype(numpy_dtype) not in _KEY_DTYPES:
            if keys.isna().any():
                raise ValueError(_NULL_KEYS)
            return _widened(keys.to_numpy(dtype=numpy_dtype))
        if np.dtype(numpy_dtype).kind in "iub":
            return keys, None
        if keys.isna().any():
            raise ValueError(_NULL_KEYS)
        return _ordered_keys(keys.to_numpy(dtype=numpy_dtype))
    if dtype is not None and not isinstance(dtype, np.dtype) and hasattr(keys, "isna") and hasattr(keys, "to_numpy"):
        # pandas' string dtype and other extension types without a NumPy
        # counterpart: their values, missing ones refused.
        if keys.isna().any():
            raise ValueError(_NULL_KEYS)
        return _numbered_by_value(keys.to_numpy(dtype=object))
    if dtype is None and isinstance(keys, (list, tuple)):
        keys = _list_keys(keys)
        dtype = keys.dtype
    try:
        dtype = np.dtype(dtype) if dtype is not None else None
    except TypeError:  # a dtype NumPy does not know (Polars)
        return keys, None
    if dtype is None or dtype in _KEY_DTYPES:
        return keys, None
    if dtype.kind not in "iub":
        return _ordered_keys(np.asarray(keys))
    return _widened(np.asanyarray(keys))


_WIDER_VALUES = {
    np.dtype(np.int8): np.dtype(np.int32),
    np.dtype(np.int16): np.dtype(np.int32),
    np.dtype(np.uint8): np.dtype(np.uint32),
    np.dtype(np.uint16): np.dtype(np.uint32),
    np.dtype(np.bool_): np.dtype(np.uint32),
    np.dtype(np.float16): np.dtype(np.float32),
}


def _engine_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the engine reduces values of ``dtype`` as (narrow ones
    widened, uint64 as int64, native byte order)."""
    dtype = dtype.newbyteorder("=")
    if dtype == np.uint64:
        return np.dtype(np.int64)
    return _WIDER_VALUES.get(dtype, dtype)


def _check_uint64_values(top: Any) -> None:
    """Refuses uint64 values whose largest (non-null) one, ``top``
    (``None`` for none), is past int64."""
    if top is not None and int(top) > np.iinfo(np.int64).max:
        raise ValueError(f"uint64 value {int(top)} is past int64, the widest integer the engine sums")


def _wider_uint64(arr: Any) -> Any:
    """uint64 values as int64, every one that is not null fitting."""
    data = np.ma.getdata(arr)
    seen = data[~np.ma.getmaskarray(arr)] if np.ma.isMaskedArray(arr) else data
    _check_uint64_values(seen.max() if seen.size else None)
    return arr.astype(np.int64)


def _engine_values(x: Any) -> Tuple[Any, Optional[np.dtype]]:
    """Values of a type the engine does not reduce, widened exactly (int8
    and int16 to int32; uint8, uint16 and bool to uint32; float16 to
    float32; uint64 to int64 where every value fits), or put in native
    byte order; and their own dtype where max and min go back to it
    (``None``: the values as they are). NumPy arrays (masked ones too),
    pandas Series (nullable ones too) and PyArrow arrays, their nulls
    kept."""
    x = _as_pyarrow(x)
    if type(x).__module__.startswith("pyarrow"):
        import pyarrow as pa

        t = getattr(x, "type", None)
        if t is None or not (pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_float16(t)):
            return x, None
        own = np.dtype(np.bool_) if pa.types.is_boolean(t) else np.dtype(t.to_pandas_dtype())
        if own == np.uint64:
            import pyarrow.compute as pc

            _check_uint64_values(pc.max(x).as_py())
            return x.cast(pa.int64()), own
        wider = _WIDER_VALUES.get(own)
        return (x, None) if wider is None else (x.cast(pa.from_numpy_dtype(wider)), own)
    dtype = getattr(x, "dtype", None)
    numpy_dtype = getattr(dtype, "numpy_dtype", None)
    if numpy_dtype is not None and not isinstance(dtype, np.dtype) and hasattr(x, "astype"):
        # A pandas nullable Series (Int8, UInt16, boolean, ...): widened to
        # the nullable type of the wider dtype, its missing values kept.
        own = np.dtype(numpy_dtype)
        wider = np.dtype(np.int64) if own == np.uint64 else _WIDER_VALUES.get(own)
        if wider is None:
            return x, None
        if own == np.uint64:
            import pandas as pd

            top = x.max(skipna=True)
            _check_uint64_values(None if pd.isna(top) else top)
        return x.astype(str(wider).capitalize().replace("Uint", "UInt")), own
    if not isinstance(dtype, np.dtype) or dtype.kind not in "iubf":
        return x, None
    if dtype.isnative and dtype != np.uint64 and dtype not in _WIDER_VALUES:
        return x, None
    # NumPy arrays, and pandas Series kept as Series (their float NaN is
    # a null, as the engine reads a Series), converted alike.
    if not dtype.isnative:
        x = x.astype(dtype.newbyteorder("="))
    own = np.dtype(x.dtype)
    if own == np.uint64:
        return _wider_uint64(x if isinstance(x, np.ndarray) else x.to_numpy()), own
    wider = _WIDER_VALUES.get(own)
    return (x, None) if wider is None else (x.astype(wider), own)


def _own_type(result: Any, op: str, own: Optional[np.dtype]) -> Any:
    """A ``max``/``min`` result of widened values back in their own dtype
    (every value is one exactly); other results as they are."""
    if own is None or op not in ("max", "min") or result is None:
        return result
    if isinstance(result, np.ndarray):
        return result.astype(own)
    return own.type(result)


def _restore_keys(distinct: np.ndarray, restore: _Restore) -> Any:
    return distinct if restore is None else restore(distinct)


def _is_column(obj: Any) -> bool:
    """True for an array (NumPy, pandas, Arrow), as opposed to a key or a
    Python list of keys."""
    return any(hasattr(obj, a) for a in ("__array__", "__arrow_c_array__", "__arrow_c_stream__"))


def _key_columns(keys: Any) -> Optional[list]:
    """The key columns of ``keys`` when it is several of them (a list or
    tuple of arrays), else ``None`` (one column: an array, or a Python
    list of keys)."""
    if isinstance(keys, (list, tuple)) and len(keys) > 0 and all(_is_column(k) for k in keys):
        return list(keys)
    return None


def _prepare_keys(keys: Any) -> Tuple[Any, bool, _Restore]:
    """:func:`_engine_keys` of one key column, or of each of several (a
    list or tuple of arrays): the keys for the engine, whether they are
    several columns, and how to turn the distinct keys back (a tuple of
    arrays, one a column, for several)."""
    if isinstance(keys, GroupIndex):
        raise ValueError(
            "a GroupIndex is taken by Engine.reduce, Engine.partial(_columns) and Lanes.groupby: give the key arrays here"
        )
    columns = _key_columns(keys)
    if columns is not None:
        prepared = [_engine_keys(k) for k in columns]
        restores = [r for _, r in prepared]
        return (
            [k for k, _ in prepared],
            True,
            lambda d: tuple(_restore_keys(c, r) for c, r in zip(d, restores)),
        )
    k, restore = _engine_keys(keys)
    return k, False, restore


def _value_columns(x: Any) -> Optional[Tuple[list, list]]:
    """The names and columns of several value columns (a pandas DataFrame,
    a PyArrow table or record batch, a dict of columns), else ``None``."""
    if isinstance(x, dict):
        return list(x), list(x.values())
    x = _as_pyarrow(x)
    if type(x).__module__.startswith("pyarrow") and hasattr(x, "column_names"):
        return list(x.column_names), [x.column(i) for i in range(x.num_columns)]
    if not isinstance(x, np.ndarray) and getattr(x, "ndim", None) == 2 and hasattr(x, "columns"):
        return list(x.columns), [x.iloc[:, i] for i in range(len(x.columns))]
    return None


class GroupIndex:
    """The groups of a key column (or of several key columns), found once by
    :meth:`Engine.group_index` and given as ``keys=`` to
    :meth:`Engine.reduce` and :meth:`Engine.partial` for each value column
    of the same rows: the keys are read, named and planned once, not once
    a column (what ``df.groupby(k).agg(...)`` over several columns needs).

    Every result by an index has one entry per key of :attr:`keys`, in
    that order, so the results of several columns line up; a key whose
    values in a column are all null keeps its entry there (count 0, other
    ops masked). The index holds a copy of the keys; the arrays it was made
    from may go."""

    __slots__ = ("_native", "_restore")

    def __init__(self, native: Any, restore: _Restore) -> None:
        self._native = native
        self._restore = restore

    @property
    def keys(self) -> Any:
        """The distinct keys, ascending, as ``Engine.reduce`` with these
        keys returns them (a tuple of arrays for several key columns)."""
        return _restore_keys(self._native.keys(), self._restore)

    @property
    def rows(self) -> int:
        """Rows of the keys: each value column must have this many values."""
        return int(self._native.rows)

    def __len__(self) -> int:
        return len(self._native)

    def __repr__(self) -> str:
        return f"<gpulanes.GroupIndex of {len(self)} keys over {self.rows} rows>"


def _not_an_index(keys: Any) -> None:
    """Refuses a :class:`GroupIndex` where keyed states' keys are wanted."""
    if isinstance(keys, GroupIndex):
        raise ValueError("give the states' keys (index.keys), not the GroupIndex")


def _offsets(offsets: Any) -> Optional[np.ndarray]:
    if offsets is None:
        return None
    o = np.asarray(offsets)
    if o.ndim != 1 or not (o.size == 0 or np.issubdtype(o.dtype, np.integer)):
        raise ValueError("offsets must be a 1-D sequence of integers")
    if o.dtype == np.uint64 and o.size and o.max() > np.iinfo(np.int64).max:
        at = int(np.argmax(o > np.iinfo(np.int64).max))
        raise ValueError(f"invalid partitions: offset {at} is {int(o[at])}, past any array's length")
    return np.ascontiguousarray(o, dtype=np.int64)


def _size(partition_size: Any) -> Optional[int]:
    if partition_size is None:
        return None
    k = operator.index(partition_size)
    if k < 0:
        raise ValueError(f"partition_size must be positive, got {k}")
    return k


def _lanes_for_axis(x: Any, axis: Any) -> tuple:
    """The array with the reduced axes last (C order), the kept shape and
    the length of each reduced lane."""
    if not isinstance(x, np.ndarray) and (
        hasattr(x, "__arrow_c_array__") or hasattr(x, "__arrow_c_stream__")
    ):
        # NumPy would turn Arrow nulls into NaN (and integers into floats).
        raise ValueError("axis= takes NumPy arrays; reduce Arrow columns with partition_size= or offsets=")
    if np.ma.isMaskedArray(x) and np.ma.getmaskarray(x).any():
        # Masked entries are nulls, never the values under the mask.
        raise ValueError("axis= takes no masked entries; pass .filled(...), or a 1-D masked array without axis=")
    a = np.asarray(x)
    nd = a.ndim
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    norm = []
    for ax in axes:
        ax = int(ax)
        if not -nd <= ax < nd:
            raise ValueError(f"axis {ax} is out of bounds for an array of {nd} dimensions")
        norm.append(ax % nd)
    if len(set(norm)) != len(norm):
        raise ValueError("repeated axis")
    kept = [i for i in range(nd) if i not in norm]
    moved = a.transpose(kept + sorted(norm))
    kept_shape = tuple(a.shape[i] for i in kept)
    lane = 1
    for i in norm:
        lane *= a.shape[i]
    return np.ascontiguousarray(moved), kept_shape, lane


class Engine:
    """The GPU reduction engine. The adapter is chosen as in Rust
    (``WGPU_BACKEND``, ``WGPU_ADAPTER_NAME``, ``WGPU_POWER_PREF``); on a
    machine without a GPU, Mesa's lavapipe runs the kernels on the CPU.

    One engine per process is enough and may be shared by threads. An
    engine holds a device, which cannot cross processes: pickled (sent to a
    Dask worker, say), it arrives as the receiving process's
    :func:`default_engine`."""

    def __init__(self) -> None:
        self._native = _gpulanes.Engine()

    def __reduce__(self) -> Tuple[Any, tuple]:
        return (default_engine, ())

    def info(self) -> Dict[str, Any]:
        """The adapter, backend, driver and limits."""
        return self._native.info()

    def __repr__(self) -> str:
        i = self.info()
        return f"<gpulanes.Engine on {i['name']} ({i['backend']})>"

    def reduce(
        self,
        x: Any,
        op: Union[str, Sequence[str], Dict[Any, Any]],
        *,
        nan: str = "propagate",
        partition_size: Optional[int] = None,
        offsets: Any = None,
        axis: Any = None,
        keys: Any = None,
    ) -> Any:
        """``op`` (a name, or a sequence of names) over ``x``.

        With ``keys`` (int32, uint32 or int64, one per value, unsorted; NumPy
        and pandas int8, int16, uint8, uint16, bool and uint64 keys are
        widened exactly and come back in their own type; categorical keys,
        pandas or PyArrow dictionary ones, are grouped by code and come back
        as their categories' values in code order; floats, dates, strings
        and bytes of NumPy, pandas and PyArrow, and Python objects that
        order, are grouped by value, -0.0 with 0.0, and come back as their
        values; a missing key, NaN, NaT or None as well as a null, is
        refused), the
        reduction is per distinct key; with a list or tuple of arrays as key
        columns (``keys=[region, product]``; a Python list of keys stays
        one column), per distinct key tuple, and the distinct keys are a
        tuple of arrays, one a column, in the tuples' lexicographic order and the result is ``(distinct_keys,
        result)``: the keys ascending, and an array with one entry per key
        (a dict of them for a sequence of ops), masked where a key has no
        value (max/min/mean of only NaN under ``nan="ignore"``). Row order
        does not change a bit of it. Null values (Arrow nulls, masked
        entries) are skipped and not counted, but their keys are kept: a
        key whose values are all null has count 0 and every other op
        masked, as SQL's ``GROUP BY`` gives. Keys must not be null.
        ``keys`` may be a :class:`GroupIndex` (:meth:`group_index`) to
        reduce several value columns by keys read once. With keys, ``x``
        may also be several value columns (a pandas DataFrame, a PyArrow
        table or record batch, a dict of columns): the keys are read once
        and the result is ``(distinct_keys, {column: result})``, each
        column's result what ``reduce`` of that column gives, all keyed by
        ``distinct_keys``; ``op`` may then be a dict from column to ops, as
        pandas' ``agg`` takes it, and only those columns are reduced.

        Without partitions or ``axis``, the result of one op is a scalar
        (or ``None``); with ``partition_size`` (consecutive partitions of
        that many values, the last may be short), ``offsets`` (Arrow-style
        k+1 offsets) or ``axis`` (an int or tuple of ints of an n-D NumPy
        array), it is a NumPy array, masked where a partition has no value.
        A sequence of ops gives a dict from op name to result; ops of one
        kind (sum, mean, count) share one pass over the data.
        """
        frame = _value_columns(x) if keys is not None else None
        if frame is not None:
            if axis is not None or partition_size is not None or offsets is not None:
                raise ValueError("give keys or partitions/axis, not both")
            return self._reduce_columns(frame, op, nan, keys)
        if isinstance(op, dict):
            raise ValueError("ops as a dict name value columns: give a DataFrame, a PyArrow table or a dict of columns, with keys")
        ops = [op] if isinstance(op, str) else list(op)
        for o in ops:
            if not isinstance(o, str):
                raise ValueError(f"op must be a name ({', '.join(OPS)}), got {o!r}")
        x, own = _engine_values(x)
        if keys is not None:
            if axis is not None or partition_size is not None or offsets is not None:
                raise ValueError("give keys or partitions/axis, not both")
            if isinstance(keys, GroupIndex):
                restore = keys._restore
                distinct, pairs = self._native.reduce_by_index(x, keys._native, ops, nan)
            else:
                keys, composite, restore = _prepare_keys(keys)
                distinct, pairs = self._native.reduce_by_key(x, keys, ops, nan, composite)
            res = {name: _own_type(_array(values, valid), name, own) for name, (values, valid) in zip(ops, pairs)}
            return _restore_keys(distinct, restore), (res[ops[0]] if isinstance(op, str) else res)
        shape = None
        if axis is not None:
            if partition_size is not None or offsets is not None:
                raise ValueError("give axis or partitions, not both")
            x, shape, lane = _lanes_for_axis(x, axis)
            n_lanes = int(np.prod(shape, dtype=np.int64)) if shape else 1
            offsets = np.arange(n_lanes + 1, dtype=np.int64) * lane
        pairs = self._native.reduce(x, ops, nan, _size(partition_size), _offsets(offsets))
        whole = partition_size is None and offsets is None
        out = {}
        for name, (values, valid) in zip(ops, pairs):
            if whole:
                out[name] = _own_type(_scalar(values, valid), name, own)
            else:
                arr = _own_type(_array(values, valid), name, own)
                out[name] = arr.reshape(shape) if shape is not None else arr
        return out[ops[0]] if isinstance(op, str) else out

    def _reduce_columns(self, frame: Tuple[list, list], op: Any, nan: str, keys: Any) -> Any:
        """:meth:`reduce` of several value columns by one key column (or
        key tuple), the keys read once: ``(distinct_keys, {column:
        result})``."""
        names, columns = frame
        repeated = sorted({str(n) for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"value columns named alike ({', '.join(repeated)}): results are keyed by column name")
        if isinstance(op, dict):
            unknown = [c for c in op if c not in names]
            if unknown:
                raise ValueError(f"ops name columns {unknown!r} that are not among the values' columns {names!r}")
            picked = [(c, columns[names.index(c)], o) for c, o in op.items()]
        else:
            picked = [(c, col, op) for c, col in zip(names, columns)]
        if not picked:
            raise ValueError("no value columns given")
        index = keys if isinstance(keys, GroupIndex) else self.group_index(keys)
        out = {name: self.reduce(col, o, nan=nan, keys=index)[1] for name, col, o in picked}
        return index.keys, out

    def group_index(self, keys: Any) -> GroupIndex:
        """The groups of ``keys`` (any keys ``reduce`` takes: one column, or
        a list or tuple of key columns), found once: pass the result as
        ``keys=`` to :meth:`reduce` and :meth:`partial` for each value
        column of the same rows, and the keys are not read, named or
        planned again. Results have the bits the keys themselves give.

        >>> index = engine.group_index(df["region"])           # doctest: +SKIP
        >>> keys, total = engine.reduce(df["amount"], "sum", keys=index)
        >>> keys, most = engine.reduce(df["units"], "max", keys=index)
        """
        keys, composite, restore = _prepare_keys(keys)
        return GroupIndex(self._native.group_index(keys, composite), restore)

    def sum(self, x: Any, nan: str = "propagate") -> Any:
        """The exact sum of ``x``, rounded once (0 for no values)."""
        return self.reduce(x, "sum", nan=nan)

    def mean(self, x: Any, nan: str = "propagate") -> Any:
        """The exact sum over the count, rounded once (``None`` for no values)."""
        return self.reduce(x, "mean", nan=nan)

    def max(self, x: Any, nan: str = "propagate") -> Any:
        """The largest value (``None`` for no values; -0.0 < +0.0)."""
        return self.reduce(x, "max", nan=nan)

    def min(self, x: Any, nan: str = "propagate") -> Any:
        """The smallest value (``None`` for no values; -0.0 < +0.0)."""
        return self.reduce(x, "min", nan=nan)

    def count(self, x: Any, nan: str = "propagate") -> Any:
        """Values counted: non-null ones, and under ``nan="ignore"`` non-NaN ones."""
        return self.reduce(x, "count", nan=nan)

    @overload
    def partial(self, x: Any, op: str, *, partition_size: None = None, offsets: None = None) -> bytes: ...

    @overload
    def partial(
        self, x: Any, op: str, *, partition_size: Optional[int] = None, offsets: Any = None, keys: None = None
    ) -> Union[bytes, List[bytes]]: ...

    @overload
    def partial(self, x: Any, op: str, *, keys: Any) -> Tuple[np.ndarray, List[bytes]]: ...

    def partial(
        self,
        x: Any,
        op: str,
        *,
        partition_size: Optional[int] = None,
        offsets: Any = None,
        keys: Any = None,
    ) -> Any:
        """The partial state of ``op`` over ``x`` as versioned bytes (a list,
        one per partition, with ``partition_size`` or ``offsets``). States
        of sum, mean and count are the same (one exact sum); max and min
        have their own. Merge states of any split of the data with
        :func:`merge` and get the value with :func:`finalize`. Nulls are
        left out of a state and a state has no count of them, so an
        all-null piece finalises as an empty one (sum 0). With ``keys``,
        the result is ``(distinct_keys, states)``, one state per key (an
        empty one for a key whose values are all null); merge such pairs
        with :func:`merge_keyed` and finish them with
        :func:`finalize_keyed`.
        """
        x, _ = _engine_values(x)
        if keys is not None:
            if partition_size is not None or offsets is not None:
                raise ValueError("give keys or partitions, not both")
            if isinstance(keys, GroupIndex):
                distinct, states = self._native.partial_by_index(x, keys._native, op)
                return _restore_keys(distinct, keys._restore), states
            keys, composite, restore = _prepare_keys(keys)
            distinct, states = self._native.partial_by_key(x, keys, op, composite)
            return _restore_keys(distinct, restore), states
        return self._native.partial(x, op, _size(partition_size), _offsets(offsets))

    def partial_columns(self, x: Any, ops: Any, *, keys: Any) -> Tuple[Any, np.ndarray]:
        """Per-key partial states of ``x`` by ``keys`` (any keys
        :meth:`reduce` takes, or a :class:`GroupIndex`), for ``ops`` (one
        op or a list), from one pass over the rows: ``(distinct_keys,
        states)``, ``states`` one uint8 array holding every key's states of
        the kinds the ops need (sum for sum, mean and count; max; min)
        column by column, with one count and one set of flags a key
        (``gpulanes::StateColumns``' versioned bytes; a key whose values
        are all null holds an empty state). Merge pairs of any split of the
        rows with :func:`merge_keyed_columns` and finish them with
        :func:`finalize_keyed_columns`. One array a chunk: where many keys
        cross processes, far cheaper than :meth:`partial`'s bytes object a
        key."""
        index = keys if isinstance(keys, GroupIndex) else self.group_index(keys)
        op_list = [ops] if isinstance(ops, str) else list(ops)
        x, _ = _engine_values(x)
        distinct, blob = self._native.partial_by_index_columns(x, index._native, op_list)
        return _restore_keys(distinct, index._restore), blob

    def _input_address(self, x: Any, partitioned: bool = False) -> tuple:
        """(address of the first value the engine reads, whether x is copied)."""
        return self._native.input_address(x, partitioned)


def merge(states: Iterable[bytes]) -> bytes:
    """Merges states (bytes from :meth:`Engine.partial` or :func:`merge`) of
    one dtype and kind, in any order and grouping, into one. Corrupt,
    foreign or mismatched states raise ``ValueError``."""
    return _gpulanes.merge([bytes(s) for s in states])


def finalize(state: bytes, op: Optional[str] = None, nan: str = "propagate") -> Any:
    """The value of ``op`` from a state: a NumPy scalar, or ``None``. ``op``
    defaults to the state's kind (sum, max or min); a sum state also gives
    ``mean`` and ``count``."""
    values, valid = _gpulanes.finalize(bytes(state), op, nan)
    return _scalar(values, valid)


def state_info(state: bytes) -> Dict[str, Any]:
    """A state's dtype, kind (sum, max or min), values seen (``len``) and
    non-NaN values (``count``)."""
    return _gpulanes.state_info(bytes(state))


def _key_parts(parts: Iterable[Tuple[Any, Any]], count: Any) -> Tuple[list, Optional[Tuple[np.dtype, ...]], bool]:
    """The parts of a keyed merge checked alike: ``[(key columns, payload)]``
    with each key column in the dtype all parts' keys of that column merge
    in (:func:`_common_key_dtype`), those dtypes (``None`` for no parts) and
    whether the keys are several columns. ``count(payload)`` is the number of keys a part
    needs, or ``None`` where the native merge checks it."""
    checked: list = []
    several_columns: Optional[bool] = None
    for keys, payload in parts:
        _not_an_index(keys)
        columns = _key_columns(keys)
        several = columns is not None
        cols = [np.asarray(c) for c in columns] if columns is not None else [np.asarray(keys)]
        if several_columns is not None and several != several_columns:
            raise ValueError("keys of one column and of several cannot be merged")
        several_columns = several
        want = count(payload)
        for c in cols:
            if c.ndim != 1:
                raise ValueError(f"keys of shape {c.shape}: each key column must be 1-D")
            if want is not None and len(c) != want:
                raise ValueError(f"{len(c)} keys for {want} states")
        if checked and len(cols) != len(checked[0][0]):
            raise ValueError(f"keys of {len(cols)} columns and of {len(checked[0][0])} cannot be merged")
        checked.append((cols, payload))
    if not checked:
        return checked, None, bool(several_columns)
    key_dtypes = tuple(_common_key_dtype([cols[i] for cols, _ in checked]) for i in range(len(checked[0][0])))
    checked = [([c.astype(d, copy=False) for c, d in zip(cols, key_dtypes)], payload) for cols, payload in checked]
    return checked, key_dtypes, bool(several_columns)


def _common_key_dtype(cols: List[np.ndarray]) -> np.dtype:
    """The dtype parts' keys of one column merge in, and come back in. Parts
    of one dtype keep it. Integer and bool parts merge in NumPy's common
    type (int32 with int64 as int64, uint8 with int16 as int16); int64 with
    uint64, whose common NumPy type is a float that would round keys past
    2^53, merge as int64 where every key fits one (as the engine's keys
    do), and are refused otherwise. Integers with floats merge as float64
    where every integer is one exactly (up to 2^53), else are refused.
    Floats merge in the widest, strings too (``<U1`` with ``<U3`` as
    ``<U3``), bytes likewise, dates and durations in the finer unit. Parts
    where some keys are Python objects (pandas' and PyArrow's strings, for
    one) merge as objects, compared by value. Other mixes (numbers with
    strings) have no common order and are refused by name. Parts without
    keys take the type of the others."""
    dtypes = list(dict.fromkeys(c.dtype for c in cols if c.size)) or list(dict.fromkeys(c.dtype for c in cols))
    cols = [c for c in cols if c.size] or cols
    if len(dtypes) == 1:
        return dtypes[0]
    kinds = {d.kind for d in dtypes}
    names = " and ".join(str(d) for d in dtypes)
    refused = ValueError(f"keys of {names} cannot be merged: they have no common order")
    if "O" in kinds or kinds == {"U", "S"}:
        # Compared as Python values; str with bytes is refused where the
        # merge orders them.
        return np.dtype(object)
    if not (kinds <= set("iubf") or kinds in ({"U"}, {"S"}, {"M"}, {"m"})):
        raise refused
    try:
        common = np.result_type(*dtypes)
    except TypeError:
        raise refused from None
    if kinds <= set("iub") and common.kind == "f":
        if all(_as_int64(c) for c in cols):
            return np.dtype(np.int64)
        raise ValueError(f"keys of {names} cannot be merged: some are past int64's range, so no integer type holds them all")
    if "f" in kinds and kinds & set("iub"):
        exact = 2**53
        for c in cols:
            if c.dtype.kind in "iu" and c.size and (int(c.max()) > exact or int(c.min()) < -exact):
                raise ValueError(f"keys of {names} cannot be merged: integer keys past 2^53 have no exact float64")
        return np.dtype(np.float64) if common.itemsize <= 8 else common
    if kinds in ({"M"}, {"m"}):
        for c in cols:
            if not np.array_equal(c.astype(common).astype(c.dtype), c):
                raise ValueError(f"keys of {names} cannot be merged: some {c.dtype} keys are past {common}'s range")
    return common


def _as_int64(c: np.ndarray) -> bool:
    """True where key column ``c`` orders as int64s: integers and bools
    (uint64 ones up to 2^63 - 1)."""
    if c.dtype.kind not in "iub":
        return False
    return c.dtype != np.uint64 or c.size == 0 or int(c.max()) <= np.iinfo(np.int64).max


def merge_keyed(parts: Iterable[Tuple[Any, Sequence[bytes]]]) -> Tuple[Any, List[bytes]]:
    """Merges keyed partial states (``(keys, states)`` pairs from
    :meth:`Engine.partial` with ``keys=``, or from this function) of any
    split of the rows, in any order: the distinct keys of all of them
    ascending by value, and each key's merged state. Keys of several
    columns (a tuple of arrays, as :meth:`Engine.partial` gives them)
    merge by key tuple and come back as a tuple of arrays, in the tuples'
    lexicographic order. Integer and bool keys merge in one native call;
    other keys (categories' values) through a dict. Categorical keys come
    back as their categories' values, so their merge orders by value: to
    keep code order, reduce the codes (``series.cat.codes``) and map the
    merged keys to categories. Parts whose keys differ in width (int32 and
    int64, strings of different lengths) merge in the type that holds
    them all."""
    checked, key_dtypes, several_columns = _key_parts(
        ((k, [bytes(s) for s in states]) for k, states in parts), len
    )
    if key_dtypes is None:
        return np.zeros(0, dtype=np.int64), []
    if all(_as_int64(c) for cols, _ in checked for c in cols):
        merged_keys, out = _gpulanes.merge_keyed_states(
            [([c.astype(np.int64) for c in cols], states) for cols, states in checked]
        )
        typed = tuple(k.astype(d) for k, d in zip(merged_keys, key_dtypes))
        return (typed if several_columns else typed[0]), list(out)
    acc: Dict[Any, List[bytes]] = {}
    for cols, states in checked:
        rows = zip(*[c.tolist() for c in cols]) if several_columns else cols[0].tolist()
        for k, s in zip(rows, states):
            acc.setdefault(k, []).append(s)
    try:
        distinct = sorted(acc)
    except TypeError as e:
        raise ValueError(f"keys that do not order: {e}") from None
    out = [acc[k][0] if len(acc[k]) == 1 else merge(acc[k]) for k in distinct]
    if several_columns:
        return tuple(np.array([k[i] for k in distinct], dtype=d) for i, d in enumerate(key_dtypes)), out
    return np.array(distinct, dtype=key_dtypes[0]), out


def _state_columns(states: Any) -> np.ndarray:
    """Keyed state columns as the native calls take them: a 1-D uint8
    array (as made), or bytes."""
    if isinstance(states, (bytes, bytearray, memoryview)):
        return np.frombuffer(states, dtype=np.uint8)
    a = np.asarray(states)
    if a.dtype != np.uint8 or a.ndim != 1:
        raise ValueError(f"keyed state columns are a 1-D uint8 array or bytes, not {a.dtype} of shape {a.shape}")
    return np.ascontiguousarray(a)


def merge_keyed_columns(parts: Iterable[Tuple[Any, np.ndarray]]) -> Tuple[Any, np.ndarray]:
    """Merges keyed state columns (``(keys, states)`` pairs from
    :meth:`Engine.partial_columns`, or from this function) of any split of
    the rows, in any order, into one such pair: the distinct keys
    ascending by value (a tuple of arrays for several key columns, in the
    tuples' lexicographic order) and their merged states, one uint8 array.
    The same bits for any split, order or grouping of the merges. Integer
    and bool keys merge as they are; other keys (categories' values) are
    numbered by value first. Parts whose keys differ in width (int32 and
    int64, strings of different lengths) merge in the type that holds
    them all. Corrupt, foreign or mismatched states raise ``ValueError``."""
    checked, key_dtypes, several_columns = _key_parts(parts, lambda states: None)
    if key_dtypes is None:
        raise ValueError("no keyed state columns to merge")
    blobs = [_state_columns(b) for _, b in checked]
    # Each key column as int64s that order as its keys: the keys
    # themselves, or their rank among all parts' keys.
    ranked: List[Optional[np.ndarray]] = []
    per_part: List[List[np.ndarray]] = [[] for _ in checked]
    for i in range(len(key_dtypes)):
        cols = [cols[i] for cols, _ in checked]
        if all(_as_int64(c) for c in cols):
            ranked.append(None)
            for p, c in zip(per_part, cols):
                p.append(c.astype(np.int64))
            continue
        try:
            values, codes = np.unique(np.concatenate(cols), return_inverse=True)
        except TypeError as e:
            raise ValueError(f"keys that do not order: {e}") from None
        ranked.append(values)
        ends = np.cumsum([len(c) for c in cols])
        for p, part in zip(per_part, np.split(codes.reshape(-1).astype(np.int64), ends[:-1])):
            p.append(part)
    merged, blob = _gpulanes.merge_keyed_columns(list(zip(per_part, blobs)))
    typed = tuple(
        (k.astype(d) if values is None else values[k]) for k, d, values in zip(merged, key_dtypes, ranked)
    )
    return (typed if several_columns else typed[0]), blob


def finalize_keyed_columns(keys: Any, states: np.ndarray, ops: Any = "sum", nan: str = "propagate") -> Tuple[Any, Any]:
    """``(keys, result)`` from keyed state columns, as :meth:`Engine.reduce`
    with ``keys=`` gives them: for one op an array with a value per key,
    for a list of ops a dict of them by op; masked where a key has no
    value (a key whose values were all null: count 0, every other op
    masked). The ops must be among those the states were made for."""
    _not_an_index(keys)
    op_list = [ops] if isinstance(ops, str) else list(ops)
    if not op_list:
        raise ValueError("no ops given")
    blob = _state_columns(states)
    out = {op: _array(*_gpulanes.finalize_keyed_columns(blob, op, nan)) for op in op_list}
    for c in _key_columns(keys) or [keys]:
        n = len(next(iter(out.values())))
        if len(c) != n:
            raise ValueError(f"{len(c)} keys for {n} states")
    return keys, (out[op_list[0]] if isinstance(ops, str) else out)


def _result_dtype(op: Optional[str], dtype: Any) -> np.dtype:
    """NumPy's result type of ``op`` over ``dtype`` values, as the engine's
    (``op=None``: the values' own type, as a max or min state gives).
    Values the engine widens (:func:`_engine_values`) keep their type for
    max and min and take the wider type's otherwise."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iubf" and not dtype.isnative:
        dtype = dtype.newbyteorder("=")
    if op in (None, "max", "min"):
        return dtype
    dtype = np.dtype(np.int64) if dtype == np.uint64 else _WIDER_VALUES.get(dtype, dtype)
    if op == "count" or (op == "sum" and dtype.kind != "f"):
        return np.dtype(np.int64)
    if op == "mean" and dtype != np.float32:
        return np.dtype(np.float64)
    return dtype


def finalize_keyed(
    keys: Any,
    states: Sequence[bytes],
    op: Optional[str] = None,
    nan: str = "propagate",
    dtype: Any = None,
) -> Tuple[Any, np.ndarray]:
    """``(keys, values)`` from keyed states: one value of ``op`` per key, as
    an array of the op's result type, masked where a key has no value. An
    empty state is a key whose values were all null: count 0, every other
    op masked (as :meth:`Engine.reduce` with ``keys=`` gives it).
    ``dtype``, the values' dtype, types the result when there are no
    states (it has no other way to know it); float64 without it."""
    _not_an_index(keys)
    columns = _key_columns(keys)
    if columns is None:
        keys = np.asarray(keys)
    for c in columns if columns is not None else [keys]:
        if len(c) != len(states):
            raise ValueError(f"{len(c)} keys for {len(states)} states")
    if not states:
        return keys, np.zeros(0, dtype=np.float64 if dtype is None else _result_dtype(op, dtype))
    values, valid = _gpulanes.finalize_keyed_states([bytes(s) for s in states], op, nan)
    return keys, _array(values, valid)


_default_lock = threading.Lock()
_default: Optional[Engine] = None
_default_pid: Optional[int] = None


def default_engine() -> Engine:
    """This process's shared engine, created on first use (again in a forked
    child, where the parent's device cannot be used)."""
    global _default, _default_pid
    import os

    pid = os.getpid()
    with _default_lock:
        if _default is None or _default_pid != pid:
            _default = Engine()
            _default_pid = pid
        return _default


def info() -> Dict[str, Any]:
    """The adapter an :class:`Engine` opens here, and its limits."""
    return default_engine().info()


class LaneFuture(concurrent.futures.Future):
    """The result of a lane submission: ``.result(timeout)`` from threads,
    ``await`` in asyncio. ``cancel()`` cancels the request on the GPU side
    too (it stops at its next chunk)."""

    def __init__(
        self,
        whole: bool,
        keyed_ops: Optional[Sequence[str]] = None,
        one_op: bool = True,
        restore: _Restore = None,
        own: Optional[np.dtype] = None,
        op: Optional[str] = None,
    ) -> None:
        super().__init__()
        self._whole = whole
        self._op = op
        self._keyed_ops = list(keyed_ops) if keyed_ops is not None else None
        self._one_op = one_op
        self._restore = restore
        self._own = own
        self._token: Any = None
        # The Lanes that took the request, held until it settles: a future
        # outliving every other reference to its Lanes still gets its
        # result (dropping a Lanes shuts its scheduler down).
        self._lanes: Any = None

    def _deliver(self, values: np.ndarray, valid: Optional[np.ndarray]) -> None:
        self._lanes = None
        value = _scalar(values, valid) if self._whole else _array(values, valid)
        value = _own_type(value, self._op, self._own)
        try:
            self.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass

    def _deliver_keyed(self, distinct: np.ndarray, pairs: List[Tuple[np.ndarray, Optional[np.ndarray]]]) -> None:
        self._lanes = None
        ops = self._keyed_ops or []
        res = {name: _own_type(_array(values, valid), name, self._own) for name, (values, valid) in zip(ops, pairs)}
        value = (_restore_keys(distinct, self._restore), res[ops[0]] if self._one_op else res)
        try:
            self.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass

    def _fail(self, exc: BaseException) -> None:
        self._lanes = None
        try:
            self.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled and self._token is not None:
            self._token.cancel()
        return cancelled

    def __await__(self):
        return asyncio.wrap_future(self).__await__()


class Lanes:
    """The scheduler's two lanes on one engine: ``realtime`` for small
    requests that want an answer now (never queued behind a batch job),
    ``batch`` for large ones that want throughput. Both take values of any
    dtype :meth:`Engine.reduce` takes, with the same results (the same
    bits, in the same result types; copied once on submission, since the
    scheduler owns its inputs), and return a :class:`LaneFuture`;
    ``groupby`` submits a keyed reduction to either lane."""

    def __init__(self, engine: Optional[Engine] = None, *, warm_dtypes: Sequence[Any] = (), **settings: Any) -> None:
        """The scheduler on ``engine`` (the default engine if ``None``).

        ``settings`` are the Rust ``LanesConfig`` fields, durations in
        seconds: ``quantum``, ``submit_lead``, ``coalesce_delay``,
        ``max_batch_in_flight``, ``max_realtime_in_flight``,
        ``max_coalesced_requests``, ``max_coalesced_bytes``,
        ``max_realtime_request_bytes``, ``realtime_queue_len``,
        ``realtime_queue_bytes``, ``batch_queue_len``, ``when_full``
        (``"block"``, the default, or ``"reject"``: a full queue raises
        :class:`QueueFullError`), ``batch_min_share``, ``reject_late``,
        ``min_chunk_units``, ``max_chunk_units``.

        The float32 kernels run once here; a reduction of another dtype
        runs its kernels once when it is first submitted, within its own
        latency (and deadline). ``warm_dtypes`` (NumPy dtypes or their
        names) are run here instead: name the types submitted with tight
        timeouts. (Keyed requests use other kernels: the first ``groupby``
        of a kind builds them itself.)"""
        self.engine = engine if engine is not None else default_engine()
        if isinstance(warm_dtypes, (str, np.dtype, type)):
            warm_dtypes = [warm_dtypes]
        names = [_engine_dtype(np.dtype(d)).name for d in warm_dtypes]
        self._native = _gpulanes.Lanes(self.engine._native, warm_dtypes=names, **settings)

    def metrics(self) -> dict:
        """Both lanes' metrics, ``{"realtime": {...}, "batch": {...}}``:
        queue depth, submissions, completed, failed, cancelled and
        deadline-missed requests, bytes, throughput (bytes/s), chunk sizes
        and latency (``count``, ``p50``, ``p99``, ``p999``, ``max``,
        ``mean``, in seconds, from submission to result)."""
        return self._native.metrics()

    def reset_metrics(self) -> None:
        """Clears the metrics (between the phases of a measurement, say)."""
        self._native.reset_metrics()

    @property
    def quantum(self) -> float:
        """The batch quantum in use, in seconds: the GPU time of batch work
        a real-time request may find ahead of it."""
        return self._native.quantum

    @property
    def submit_lead(self) -> float:
        """The just-in-time submission lead in use, in seconds."""
        return self._native.submit_lead

    def wait_idle(self) -> None:
        """Blocks until both queues are empty and nothing is on the GPU."""
        self._native.wait_idle()

    def realtime(
        self,
        x: Any,
        op: str = "sum",
        *,
        nan: str = "propagate",
        timeout: Optional[float] = None,
        partition_size: Optional[int] = None,
        offsets: Any = None,
    ) -> LaneFuture:
        """``op`` over ``x`` (or its partitions, as :meth:`Engine.reduce`
        takes them) on the real-time lane. ``timeout`` (seconds) is a
        deadline: a result not ready by then fails with ``TimeoutError``.
        A request with more partitions than one reduction may have on this
        device belongs in the batch lane and raises ``ValueError``."""
        whole = partition_size is None and offsets is None
        x, own = _engine_values(x)
        fut = LaneFuture(whole=whole, own=own, op=op)
        fut._lanes = self
        fut._token = self._native.realtime(
            x, op, fut, nan, timeout, _size(partition_size), _offsets(offsets)
        )
        return fut

    def groupby(
        self,
        keys: Any,
        x: Any,
        op: Union[str, Sequence[str]] = "sum",
        *,
        lane: str = "realtime",
        nan: str = "propagate",
        timeout: Optional[float] = None,
    ) -> LaneFuture:
        """``op`` (a name, or a sequence of names, in one pass) over the
        values of each distinct key, on ``lane`` ("realtime" or "batch").
        The future's result is what :meth:`Engine.reduce` with ``keys=``
        gives: ``(distinct_keys, result)``, the same bits. A real-time keyed
        request is a submission of its own (not coalesced with others);
        a batch one runs in steps sized like other batch chunks. ``timeout``
        (seconds, real-time only) is a deadline. Keys and values are copied
        once; bad keys or values raise ``ValueError`` here. ``keys`` may be a
        :class:`GroupIndex` (:meth:`Engine.group_index`): the keys are then
        not read or copied again, and the result has every key of the
        index, in order, as ``Engine.reduce`` by the index gives it."""
        ops = [op] if isinstance(op, str) else list(op)
        for o in ops:
            if not isinstance(o, str):
                raise ValueError(f"op must be a name ({', '.join(OPS)}), got {o!r}")
        if lane not in ("realtime", "batch"):
            raise ValueError(f'lane must be "realtime" or "batch", got {lane!r}')
        x, own = _engine_values(x)
        if isinstance(keys, GroupIndex):
            fut = LaneFuture(whole=False, keyed_ops=ops, one_op=isinstance(op, str), restore=keys._restore, own=own)
            fut._lanes = self
            fut._token = self._native.keyed_by_index(keys._native, x, ops, fut, lane == "realtime", nan, timeout)
            return fut
        keys, composite, restore = _prepare_keys(keys)
        fut = LaneFuture(whole=False, keyed_ops=ops, one_op=isinstance(op, str), restore=restore, own=own)
        fut._lanes = self
        fut._token = self._native.keyed(keys, x, ops, fut, lane == "realtime", nan, timeout, composite)
        return fut

    def batch(
        self,
        x: Any,
        op: str = "sum",
        *,
        nan: str = "propagate",
        partition_size: Optional[int] = None,
        offsets: Any = None,
    ) -> LaneFuture:
        """``op`` over ``x`` (or its partitions) on the batch lane."""
        whole = partition_size is None and offsets is None
        x, own = _engine_values(x)
        fut = LaneFuture(whole=whole, own=own, op=op)
        fut._lanes = self
        fut._token = self._native.batch(
            x, op, fut, nan, _size(partition_size), _offsets(offsets)
        )
        return fut
