// exact_f32.wgsl: float32 values for exact.wgsl.
//
// What it computes
//   The float32 layout of what exact_float.wgsl's `fold_group` does with a
//   group of GROUP_WORDS words (8 vec4s, 32 values): `clean` takes NaN and
//   infinities into flags (they never reach the sum) and keeps the sign AND
//   of all values (to know whether an exactly zero sum is -0.0), and then
//   - sum: each value as the integer m << (p - 1) on the 2^-149 grid (m the
//     24-bit mantissa with its hidden bit, p = max(exponent field, 1)), added
//     into the invocation's band [base, base + 32) of positions: 64-bit
//     lanes, negatives added as one's complement plus a count, carries out
//     of each word counted rather than propagated. A group whose largest
//     position lies above the band flushes it and anchors a new one 27
//     binades under that position; values under the band go through further
//     bands (`fold_residuals`), flushed at once.
//   - max/min: the best order key per lane.
//
// How it is dispatched
//   Not on its own: composed after exact.wgsl, before exact_float.wgsl and
//   exact_entry.wgsl.

const NEG_ZERO: u32 = 0x80000000u;
// A new band's bit 0 lies this many binades under the largest position
// seen, leaving 32 - 1 - 27 = 4 binades of room above it.
const BAND_BELOW: u32 = 27u;

struct Band {
    a0: vec4<u32>,   // sum of low words (one's complement for negatives)
    a1: vec4<u32>,   // sum of high words
    k0: vec4<u32>,   // carries out of a0
    k1: vec4<u32>,   // carries out of a1
    negs: vec4<u32>, // negative values added
}

struct Acc {
    base: u32,           // the band's lowest position (0: no band yet)
    band: Band,
    all_neg: vec4<u32>,  // AND of every value's bits
    best: vec4<u32>,     // max/min: best op key per lane (0: none)
    nans: u32,
    flags: u32,
}

fn band_new() -> Band {
    return Band(vec4<u32>(0u), vec4<u32>(0u), vec4<u32>(0u), vec4<u32>(0u), vec4<u32>(0u));
}

fn acc_new() -> Acc {
    return Acc(0u, band_new(), vec4<u32>(0xffffffffu), vec4<u32>(0u), 0u, 0u);
}

fn exponent(v: vec4<u32>) -> vec4<u32> {
    return (v >> vec4<u32>(23u)) & vec4<u32>(0xffu);
}

// Position of the mantissa's bit 0 on the grid, plus one (1..=254).
fn position(v: vec4<u32>) -> vec4<u32> {
    return max(exponent(v), vec4<u32>(1u));
}

fn mantissa(v: vec4<u32>) -> vec4<u32> {
    let hidden = select(vec4<u32>(0u), vec4<u32>(0x800000u), exponent(v) != vec4<u32>(0u));
    return (v & vec4<u32>(0x7fffffu)) | hidden;
}

// Adds the lanes of `v` whose position lies in [base, base + lim) (lim <=
// 32) to `band`; returns the nonzero lanes under `base`.
fn band_add(band: ptr<function, Band>, v: vec4<u32>, base: u32, lim: u32) -> vec4<bool> {
    let m = mantissa(v);
    let s = position(v) - vec4<u32>(base); // wraps for lanes under the band
    let mm = select(vec4<u32>(0u), m, s < vec4<u32>(lim));
    // mm << s over two words; dead lanes are 0 whatever the wrapped shift.
    let x0 = mm << s;
    let x1 = (mm >> vec4<u32>(1u)) >> (vec4<u32>(31u) - s);
    // -x = (x ^ ~0) + 1 - 2^64: the one's complement here, the rest in negs.
    let n = select(vec4<u32>(0u), vec4<u32>(0xffffffffu), (v >> vec4<u32>(31u)) != vec4<u32>(0u));
    let y0 = x0 ^ n;
    let y1 = x1 ^ n;
    (*band).a0 = (*band).a0 + y0;
    (*band).k0 = (*band).k0 + select(vec4<u32>(0u), vec4<u32>(1u), (*band).a0 < y0);
    (*band).a1 = (*band).a1 + y1;
    (*band).k1 = (*band).k1 + select(vec4<u32>(0u), vec4<u32>(1u), (*band).a1 < y1);
    (*band).negs = (*band).negs - n;
    return (s > vec4<u32>(0xffu)) & (m != vec4<u32>(0u));
}

// Adds the band (bit 0 at position `base`) to the workgroup's accumulator:
// sum over lanes of a0 + (a1 + k0) 2^32 + k1 2^64 + negs (1 - 2^64).
fn band_flush(b: Band, base: u32) {
    var w = vec4<u32>(b.a0.x, b.a1.x, b.k1.x, 0u);
    w = add128(w, vec4<u32>(b.a0.y, b.a1.y, b.k1.y, 0u));
    w = add128(w, vec4<u32>(b.a0.z, b.a1.z, b.k1.z, 0u));
    w = add128(w, vec4<u32>(b.a0.w, b.a1.w, b.k1.w, 0u));
    let k0 = b.k0.x + b.k0.y + b.k0.z + b.k0.w;
    let negs = b.negs.x + b.negs.y + b.negs.z + b.negs.w;
    w = add128(w, vec4<u32>(negs, k0, 0u - negs, select(0u, 0xffffffffu, negs != 0u)));
    flush_signed(w, base - 1u);
}

// Largest position among the nonzero lanes of `v` under `hi` (0 if none).
fn top_under(v: vec4<u32>, hi: u32) -> u32 {
    let p = position(v);
    let c = select(vec4<u32>(0u), p, (p < vec4<u32>(hi)) & (mantissa(v) != vec4<u32>(0u)));
    return max(max(c.x, c.y), max(c.z, c.w));
}

// Masks words past the unit's end (as -0.0, which adds nothing), takes NaN
// and infinities out of the sum, and keeps the max/min keys.
fn clean(acc: ptr<function, Acc>, raw: vec4<u32>, word: u32, len: u32) -> vec4<u32> {
    var valid = (vec4<u32>(word) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(len);
    var v = select(vec4<u32>(NEG_ZERO), raw, valid);
    let special = exponent(v) == vec4<u32>(0xffu);
    if any(special) {
        let mag = v & vec4<u32>(0x7fffffffu);
        let nan = mag > vec4<u32>(0x7f800000u);
        let inf = mag == vec4<u32>(0x7f800000u);
        let neg = (v >> vec4<u32>(31u)) != vec4<u32>(0u);
        let c = select(vec4<u32>(0u), vec4<u32>(1u), nan);
        (*acc).nans += c.x + c.y + c.z + c.w;
        (*acc).flags |= select(0u, FLAG_NAN, any(nan)) | select(0u, FLAG_POS_INF, any(inf & !neg)) | select(0u, FLAG_NEG_INF, any(inf & neg));
        valid = valid & !nan;
        if OP == OP_SUM {
            v = select(v, vec4<u32>(NEG_ZERO), special);
        }
    }
    if OP == OP_SUM {
        (*acc).all_neg &= v;
    } else {
        let neg = (v >> vec4<u32>(31u)) != vec4<u32>(0u);
        let key = select(v | vec4<u32>(0x80000000u), ~v, neg);
        let k = select(key, ~key, OP == 2u);
        (*acc).best = max((*acc).best, select(vec4<u32>(0u), k, valid));
    }
    return v;
}

// Largest position among the values of `v`.
fn top_of(v: vec4<u32>) -> u32 {
    let p = position(v);
    return max(max(p.x, p.y), max(p.z, p.w));
}

// The AND of every value's sign bit (bit 31).
fn all_neg_bits(acc: Acc) -> u32 {
    return acc.all_neg.x & acc.all_neg.y & acc.all_neg.z & acc.all_neg.w;
}

// The invocation's best (lo, hi) op key.
fn thread_key(acc: Acc) -> vec2<u32> {
    return vec2<u32>(0u, max(max(acc.best.x, acc.best.y), max(acc.best.z, acc.best.w)));
}
