// exact_f64.wgsl: float64 values for exact.wgsl, decoded from their bits
// (WGSL has no portable f64; every step here is 32-bit integer arithmetic).
//
// What it computes
//   The float64 layout of what exact_float.wgsl's `fold_group` does with a
//   group of GROUP_WORDS words (8 vec4s, 16 values; each vec4 holds two
//   values as (lo, hi, lo, hi)), as exact_f32.wgsl does for float32: NaN
//   and infinities into flags, the sign AND of all values, and then
//   - sum: each value as the integer m << (p - 1) on the 2^-1074 grid (m the
//     53-bit mantissa with its hidden bit, p = max(exponent field, 1)), added
//     into the invocation's band [base, base + 32) of positions: 96-bit
//     lanes, negatives as one's complement plus a count, carries counted.
//     Bands move and values under the band are handled as for float32.
//   - max/min: the best 64-bit order key per lane.
//
// How it is dispatched
//   Not on its own: composed after exact.wgsl, before exact_float.wgsl and
//   exact_entry.wgsl.

const BAND_BELOW: u32 = 27u;

struct Band {
    a0: vec2<u32>,
    a1: vec2<u32>,
    a2: vec2<u32>,
    k0: vec2<u32>,
    k1: vec2<u32>,
    k2: vec2<u32>,
    negs: vec2<u32>,
}

struct Acc {
    base: u32,
    band: Band,
    all_neg: vec2<u32>,  // AND of every value's high word
    best_lo: vec2<u32>,  // max/min: best op key per lane (0: none)
    best_hi: vec2<u32>,
    nans: u32,
    flags: u32,
}

fn band_new() -> Band {
    let z = vec2<u32>(0u);
    return Band(z, z, z, z, z, z, z);
}

fn acc_new() -> Acc {
    return Acc(0u, band_new(), vec2<u32>(0xffffffffu), vec2<u32>(0u), vec2<u32>(0u), 0u, 0u);
}

fn exponent(hi: vec2<u32>) -> vec2<u32> {
    return (hi >> vec2<u32>(20u)) & vec2<u32>(0x7ffu);
}

fn position(hi: vec2<u32>) -> vec2<u32> {
    return max(exponent(hi), vec2<u32>(1u));
}

// High word of the mantissa (21 bits with the hidden bit).
fn mantissa_hi(hi: vec2<u32>) -> vec2<u32> {
    let hidden = select(vec2<u32>(0u), vec2<u32>(0x100000u), exponent(hi) != vec2<u32>(0u));
    return (hi & vec2<u32>(0xfffffu)) | hidden;
}

fn band_add2(band: ptr<function, Band>, lo: vec2<u32>, hi: vec2<u32>, base: u32, lim: u32) -> vec2<bool> {
    let mh = mantissa_hi(hi);
    let s = position(hi) - vec2<u32>(base);
    let live = s < vec2<u32>(lim);
    let ml = select(vec2<u32>(0u), lo, live);
    let mhh = select(vec2<u32>(0u), mh, live);
    let x0 = ml << s;
    let x1 = (mhh << s) | ((ml >> vec2<u32>(1u)) >> (vec2<u32>(31u) - s));
    let x2 = (mhh >> vec2<u32>(1u)) >> (vec2<u32>(31u) - s);
    let n = select(vec2<u32>(0u), vec2<u32>(0xffffffffu), (hi >> vec2<u32>(31u)) != vec2<u32>(0u));
    let y0 = x0 ^ n;
    let y1 = x1 ^ n;
    let y2 = x2 ^ n;
    (*band).a0 = (*band).a0 + y0;
    (*band).k0 = (*band).k0 + select(vec2<u32>(0u), vec2<u32>(1u), (*band).a0 < y0);
    (*band).a1 = (*band).a1 + y1;
    (*band).k1 = (*band).k1 + select(vec2<u32>(0u), vec2<u32>(1u), (*band).a1 < y1);
    (*band).a2 = (*band).a2 + y2;
    (*band).k2 = (*band).k2 + select(vec2<u32>(0u), vec2<u32>(1u), (*band).a2 < y2);
    (*band).negs = (*band).negs - n;
    let nonzero = (lo | mh) != vec2<u32>(0u);
    return (s > vec2<u32>(0x7ffu)) & nonzero;
}

// Adds the lanes of a vec4 (two values) in [base, base + lim).
fn band_add(band: ptr<function, Band>, v: vec4<u32>, base: u32, lim: u32) -> vec2<bool> {
    return band_add2(band, v.xz, v.yw, base, lim);
}

// Sum over lanes of a0 + (a1 + k0) 2^32 + (a2 + k1) 2^64 + k2 2^96
// + negs (1 - 2^96), flushed with bit 0 at position `base`.
fn band_flush(b: Band, base: u32) {
    var w = vec4<u32>(b.a0.x, b.a1.x, b.a2.x, b.k2.x);
    w = add128(w, vec4<u32>(b.a0.y, b.a1.y, b.a2.y, b.k2.y));
    w = add128(w, vec4<u32>(0u, b.k0.x, b.k1.x, 0u));
    w = add128(w, vec4<u32>(0u, b.k0.y, b.k1.y, 0u));
    let negs = b.negs.x + b.negs.y;
    w = add128(w, vec4<u32>(negs, 0u, 0u, 0u - negs));
    flush_signed(w, base - 1u);
}

fn top_under(v: vec4<u32>, hi: u32) -> u32 {
    let p = position(v.yw);
    let nonzero = (v.xz | mantissa_hi(v.yw)) != vec2<u32>(0u);
    let c = select(vec2<u32>(0u), p, (p < vec2<u32>(hi)) & nonzero);
    return max(c.x, c.y);
}

// Masks values past the unit's end (as -0.0), takes NaN and infinities out
// of the sum, and keeps the max/min keys. `word` is the vec4's first word.
fn clean(acc: ptr<function, Acc>, raw: vec4<u32>, word: u32, len: u32) -> vec4<u32> {
    var valid = (vec2<u32>(word) + vec2<u32>(0u, 2u)) < vec2<u32>(len);
    var lo = select(vec2<u32>(0u), raw.xz, valid);
    var hi = select(vec2<u32>(0x80000000u), raw.yw, valid);
    let special = exponent(hi) == vec2<u32>(0x7ffu);
    if any(special) {
        let mag = hi & vec2<u32>(0x7fffffffu);
        let inf = (mag == vec2<u32>(0x7ff00000u)) & (lo == vec2<u32>(0u));
        let nan = special & !inf;
        let neg = (hi >> vec2<u32>(31u)) != vec2<u32>(0u);
        let c = select(vec2<u32>(0u), vec2<u32>(1u), nan);
        (*acc).nans += c.x + c.y;
        (*acc).flags |= select(0u, FLAG_NAN, any(nan)) | select(0u, FLAG_POS_INF, any(inf & !neg)) | select(0u, FLAG_NEG_INF, any(inf & neg));
        valid = valid & !nan;
        if OP == OP_SUM {
            lo = select(lo, vec2<u32>(0u), special);
            hi = select(hi, vec2<u32>(0x80000000u), special);
        }
    }
    if OP == OP_SUM {
        (*acc).all_neg &= hi;
    } else {
        let neg = (hi >> vec2<u32>(31u)) != vec2<u32>(0u);
        let khi0 = select(hi | vec2<u32>(0x80000000u), ~hi, neg);
        let klo0 = select(lo, ~lo, neg);
        let khi = select(vec2<u32>(0u), select(khi0, ~khi0, OP == 2u), valid);
        let klo = select(vec2<u32>(0u), select(klo0, ~klo0, OP == 2u), valid);
        let wins = (khi > (*acc).best_hi) | ((khi == (*acc).best_hi) & (klo > (*acc).best_lo));
        (*acc).best_hi = select((*acc).best_hi, khi, wins);
        (*acc).best_lo = select((*acc).best_lo, klo, wins);
    }
    return vec4<u32>(lo.x, hi.x, lo.y, hi.y);
}

// Largest position among the two values of `v`.
fn top_of(v: vec4<u32>) -> u32 {
    let p = position(v.yw);
    return max(p.x, p.y);
}

// The AND of every value's sign bit (bit 31 of the high words).
fn all_neg_bits(acc: Acc) -> u32 {
    return acc.all_neg.x & acc.all_neg.y;
}

fn thread_key(acc: Acc) -> vec2<u32> {
    return key_max(vec2<u32>(acc.best_lo.x, acc.best_hi.x), vec2<u32>(acc.best_lo.y, acc.best_hi.y));
}
