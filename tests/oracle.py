"""Exact reference for tests/exact.rs, independent of the crate: Python
integers and fractions, rounded once to the result type by hand.

Reads cases from the file named by argv[1]; each case is one line
`dtype op nan hexdata` (hexdata: the values' little-endian bytes, may be
empty) and gets one output line: the result's bits as hex, `none` (no
value), or `overflow` (an integer sum outside int64). NaN results print as
`nan`. Semantics are the crate's documented ones (src/op.rs, src/dtype.rs).
"""

import math
import struct
import sys
from fractions import Fraction

FORMATS = {"float32": ("<f", 4), "float64": ("<d", 8), "int32": ("<i", 4),
           "uint32": ("<I", 4), "int64": ("<q", 8)}


def round_binary(q, precision, min_exp, max_exp):
    """Rounds the rational q to nearest-even with `precision` bits, the
    smallest ulp 2^min_exp, and returns (sign, mantissa, exponent) or 'inf'."""
    sign = q < 0
    q = abs(q)
    if q == 0:
        return sign, 0, 0
    n, d = q.numerator, q.denominator
    e = n.bit_length() - d.bit_length()  # 2^e <= q < 2^(e+2)
    if Fraction(n, d) < Fraction(2) ** e:
        e -= 1
    # q in [2^e, 2^(e+1)): ulp is 2^(e - precision + 1), not below 2^min_exp.
    ulp_exp = max(e - precision + 1, min_exp)
    scaled = q / (Fraction(2) ** ulp_exp)
    m = scaled.numerator // scaled.denominator
    rem = scaled - m
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and m % 2 == 1):
        m += 1
    if m == 2 ** precision:
        m //= 2
        ulp_exp += 1
    if m != 0 and m.bit_length() + ulp_exp - 1 > max_exp:
        return "inf" if not sign else "-inf"
    return sign, m, ulp_exp


def float_bits(q, dtype, negzero=False):
    if dtype == "float32":
        r = round_binary(q, 24, -149, 127)
    else:
        r = round_binary(q, 53, -1074, 1023)
    if r in ("inf", "-inf"):
        v = math.inf if r == "inf" else -math.inf
    else:
        sign, m, ex = r
        v = math.ldexp(m, ex)
        if sign:
            v = -v
        if m == 0:
            v = -0.0 if negzero else 0.0
    if dtype == "float32":
        return struct.pack("<f", v).hex()
    return struct.pack("<d", v).hex()


def order_key(x):
    # -0.0 below +0.0
    return (x, not math.copysign(1.0, x) < 0) if isinstance(x, float) else (x, 0)


def solve(dtype, op, nan, values):
    is_float = dtype.startswith("float")
    result_float = dtype if dtype == "float32" else "float64"
    nans = [v for v in values if is_float and math.isnan(v)]
    valid = [v for v in values if not (is_float and math.isnan(v))]
    count = len(values) if nan == "propagate" else len(valid)
    if op == "count":
        return str(count)
    if nans and nan == "propagate":
        return "nan"
    if op in ("max", "min"):
        if not valid:
            return "none"
        best = (max if op == "max" else min)(valid, key=order_key)
        return struct.pack(FORMATS[dtype][0], best).hex()
    if op == "mean" and not valid:
        return "none"
    pos_inf = any(v == math.inf for v in valid) if is_float else False
    neg_inf = any(v == -math.inf for v in valid) if is_float else False
    if pos_inf and neg_inf:
        return "nan"
    if pos_inf or neg_inf:
        fmt = "<f" if result_float == "float32" else "<d"
        return struct.pack(fmt, math.inf if pos_inf else -math.inf).hex()
    if is_float:
        # Every finite value is an integer on the 2^-1074 grid: sum integers.
        grid = 2 ** 1074
        total = Fraction(sum(n * (grid // d) for n, d in
                             (v.as_integer_ratio() for v in valid)), grid)
    else:
        total = sum(valid)
    if not is_float and op == "sum":
        if not -(2 ** 63) <= total < 2 ** 63:
            return "overflow"
        return struct.pack("<q", total).hex()
    negzero = is_float and len(valid) > 0 and all(
        v == 0 and math.copysign(1.0, v) < 0 for v in valid)
    q = Fraction(total)
    if op == "mean":
        q = q / len(valid)
    return float_bits(q, result_float, negzero and q == 0)


def main():
    out = []
    with open(sys.argv[1]) as f:
        for line in f:
            parts = line.split()
            dtype, op, nan = parts[0], parts[1], parts[2]
            raw = bytes.fromhex(parts[3]) if len(parts) > 3 else b""
            fmt, size = FORMATS[dtype]
            values = [struct.unpack(fmt, raw[i:i + size])[0]
                      for i in range(0, len(raw), size)]
            out.append(solve(dtype, op, nan, values))
    sys.stdout.write("\n".join(out) + "\n")


main()
