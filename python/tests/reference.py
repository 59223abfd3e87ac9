"""Independent exact references: sums and means from ``fractions.Fraction``
(and ``math.fsum`` for float64 sums), rounded once to the result type."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Optional

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def round_to(q: Fraction, dtype: np.dtype) -> Any:
    """``q`` rounded to nearest (ties to even) in ``dtype``."""
    if np.dtype(dtype) == np.float64:
        try:
            return np.float64(q.numerator / q.denominator)
        except OverflowError:
            return np.float64(math.inf if q > 0 else -math.inf)
    # float32: the double nearest q, then the nearest of its float32 neighbours.
    try:
        d = q.numerator / q.denominator
    except OverflowError:
        d = math.inf if q > 0 else -math.inf
    with np.errstate(over="ignore"):
        c = np.float32(d)
    best = None
    for cand in (np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))):
        if not np.isfinite(cand):
            continue
        dist = abs(Fraction(float(cand)) - q)
        key = (dist, int(np.array(cand).view(np.uint32)) & 1)
        if best is None or key < best[0]:
            best = (key, cand)
    top = Fraction(float(np.finfo(np.float32).max))
    half_ulp = Fraction(2) ** (127 - 24)
    if abs(q) >= top + half_ulp:
        return np.float32(math.inf if q > 0 else -math.inf)
    assert best is not None
    return np.float32(best[1])


def result_dtype(op: str, dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if op == "count":
        return np.dtype(np.int64)
    if op in ("max", "min"):
        return dtype
    if op == "sum":
        return dtype if dtype in FLOATS else np.dtype(np.int64)
    return dtype if dtype == np.float32 else np.dtype(np.float64)


def reference(x: np.ndarray, op: str, nan: str = "propagate") -> Optional[Any]:
    """``op`` over the values of ``x`` with the engine's documented semantics."""
    x = np.asarray(x).ravel()
    dtype = x.dtype
    rt = result_dtype(op, dtype)
    is_float = dtype in FLOATS
    has_nan = bool(is_float and np.isnan(x).any())
    if op == "count":
        n = len(x) if nan == "propagate" or not is_float else int((~np.isnan(x)).sum())
        return np.int64(n)
    if has_nan and nan == "propagate":
        return rt.type(np.nan)
    v = x[~np.isnan(x)] if is_float else x
    if op in ("max", "min"):
        if len(v) == 0:
            return None
        if is_float:
            # -0.0 orders below +0.0.
            keyed = sorted(v.tolist(), key=lambda f: (f, math.copysign(1, f)))
            return dtype.type(keyed[-1] if op == "max" else keyed[0])
        return dtype.type(v.max() if op == "max" else v.min())
    if op == "mean" and len(v) == 0:
        return None
    if is_float:
        pos, neg = bool(np.isposinf(v).any()), bool(np.isneginf(v).any())
        if pos or neg:
            return rt.type(np.nan if pos and neg else (np.inf if pos else -np.inf))
        if op == "sum" and dtype == np.float64:
            s = math.fsum(v.tolist())
            if s == 0:
                all_neg_zero = len(v) > 0 and all(math.copysign(1, f) < 0 for f in v.tolist())
                return np.float64(-0.0 if all_neg_zero else 0.0)
            return np.float64(s)
        exact = sum((Fraction(float(f)) for f in v.tolist()), Fraction(0))
        if exact == 0:
            all_neg_zero = len(v) > 0 and all(math.copysign(1, f) < 0 for f in v.tolist())
            return rt.type(-0.0 if all_neg_zero else 0.0)
        q = exact if op == "sum" else exact / len(v)
        return round_to(q, rt)
    exact_int = sum(int(i) for i in v.tolist())
    if op == "sum":
        return np.int64(exact_int)
    return round_to(Fraction(exact_int, len(v)), np.dtype(np.float64))


def same_bits(a: Any, b: Any) -> bool:
    """True when a and b are both None or the same value with the same bits
    (and the same dtype)."""
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()
