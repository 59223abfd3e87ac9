// reduce.wgsl: deterministic, compensated block reduction of partitioned f32 data.
//
// What it computes
//   One `Partial` per *work unit*. A work unit is a fixed-size slice of one
//   partition (a segment): BLOCK = 8192 input floats in the element pass,
//   GROUP = 2048 partials in the partial pass. Units are numbered globally
//   (segment after segment); the segment table tells each workgroup which
//   segment and which slice of it it owns. Running the element pass once and
//   then the partial pass until every segment has a single partial yields one
//   partial per non-empty segment. The host turns that into the final value.
//
//   OP = 0 (sum): two-sum (Neumaier) accumulation per invocation, then a
//            compensated pairwise combine (double-single arithmetic). NaN and
//            +/-inf never enter the arithmetic: they are counted in flags,
//            detected by their bits (compilers may assume finite floats).
//   OP = 1 (max) / OP = 2 (min): comparisons on a monotonic integer key of the
//            float bits, so -0.0 < +0.0 and NaN never reaches a comparison.
//   Every partial also carries the count of non-NaN inputs (64-bit).
//
// How it is dispatched
//   One workgroup per unit, on a 2-D grid (unit = workgroup_id.x +
//   workgroup_id.y * num_workgroups.x) so that more than 65535 units fit in
//   one dispatch; surplus workgroups return at once. A unit's result is a
//   fixed tree over 256 per-invocation partials: partial p folds its inputs
//   in a fixed order (elements 4*(p + k*256) .. +3 of the block, k = 0..7,
//   or partials p + k*256), and the 256 are combined by a
//   sequential-addressing tree (stride 128, 64, ..., 1). The fold order and
//   the tree depend only on the unit's position inside its segment, never
//   on how the host chunked the input into dispatches, so results are
//   bitwise reproducible.
//
// This file holds the folds and the combine. It is composed with one kernel
// shape (src/kernels.rs), which defines the entry points and how
// invocations share the work: wide.wgsl plus tree_workgroup.wgsl or
// tree_subgroup.wgsl (@workgroup_size(256), partial p in invocation p), or
// narrow.wgsl (@workgroup_size(8), 32 partials per invocation).

override OP: u32 = 0u;

const OP_SUM: u32 = 0u;
const OP_MAX: u32 = 1u;

const WG: u32 = 256u;
const VEC4_PER_THREAD: u32 = 8u;
const BLOCK: u32 = 8192u; // WG * VEC4_PER_THREAD * 4
const PARTIALS_PER_THREAD: u32 = 8u;
const GROUP: u32 = 2048u; // WG * PARTIALS_PER_THREAD

const FLAG_NAN: u32 = 1u;
const FLAG_POS_INF: u32 = 2u;
const FLAG_NEG_INF: u32 = 4u;
const FLAG_MASK: u32 = 0xffu;
const COUNT_HI_SHIFT: u32 = 8u;

// a: running sum (sum) or extremum (max/min); b: compensation term (sum only);
// count_lo + (hi_flags >> 8) << 32: non-NaN inputs; hi_flags & 0xff: FLAG_*;
// big_a + big_b: sum of the inputs of magnitude >= 2^100, scaled by 2^-64,
// so sums that pass f32's range stay exact (the host adds the two in f64).
struct Partial {
    a: f32,
    b: f32,
    count_lo: u32,
    hi_flags: u32,
    big_a: f32,
    big_b: f32,
    _p0: u32,
    _p1: u32,
}

// Inputs whose exponent field is at least this (|x| >= 2^100) go to the big sum.
const BIG_EXP_BITS: u32 = 0x71800000u;
const BIG_SCALE: f32 = 5.421010862427522e-20; // 2^-64, exact

// One entry per segment, plus a sentinel whose first_unit is the unit total.
struct Segment {
    first_unit: u32, // global index of the segment's first unit
    offset_lo: u32,  // low 32 bits of the segment's first input item index
    last_len: u32,   // items in the segment's last unit (1..=unit size)
    _pad: u32,
}

struct Params {
    unit_base: u32,     // global index of this dispatch's first unit
    unit_count: u32,    // units in this dispatch
    input_base_lo: u32, // low 32 bits of the item index at the input binding's start
    out_base: u32,      // global unit index at the output binding's start
    segment_count: u32, // segments in the table (the sentinel not counted)
    one: f32,           // 1.0, read at run time: see `opaque`
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> segments: array<Segment>;
@group(0) @binding(2) var<storage, read> in_vec4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> in_scalar: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_partials: array<Partial>;
@group(0) @binding(5) var<storage, read> in_partials: array<Partial>;

// Shader compilers treat float arithmetic as reassociable unless told
// otherwise (SPIR-V NoContraction, which WGSL cannot express), and fold the
// error terms of two-sum to zero ((a + x) - a -> x) or regroup them. A float
// algebra cannot see through an integer XOR with a zero that exists only at
// run time (derived from params.one = 1.0), so every intermediate of two-sum
// passes through this barrier. (Multiplying by a run-time 1.0 was not enough:
// lavapipe's LLVM still regrouped straight-line two-sums.)
fn opaque(x: f32) -> f32 {
    let zero = bitcast<u32>(params.one) ^ 0x3f800000u;
    return bitcast<f32>(bitcast<u32>(x) ^ zero);
}

// Two-sum (Knuth): returns (s, e) with s + e == a + b exactly.
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = opaque(a + b);
    let bb = opaque(s - a);
    let e = opaque(a - opaque(s - bb)) + opaque(b - bb);
    return vec2<f32>(s, e);
}

fn identity() -> Partial {
    // -0.0 is the additive identity: -0 + x == x for every x, +0 included.
    // Both high words (small and big sums) start there, so a zero high word
    // keeps IEEE's sign: -0.0 if only -0.0 (or nothing) was added to it,
    // +0.0 once values were added that cancelled exactly.
    return Partial(bitcast<f32>(0x80000000u), 0.0, 0u, 0u, bitcast<f32>(0x80000000u), 0.0, 0u, 0u);
}

// Monotonic key: a < b (as floats, -0 < +0) iff key(a) < key(b) (as u32).
fn order_key(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

fn add_count(p: Partial, lo: u32, hi: u32) -> Partial {
    var r = p;
    let sum_lo = p.count_lo + lo;
    let carry = select(0u, 1u, sum_lo < lo);
    let sum_hi = (p.hi_flags >> COUNT_HI_SHIFT) + hi + carry;
    r.count_lo = sum_lo;
    r.hi_flags = (sum_hi << COUNT_HI_SHIFT) | (p.hi_flags & FLAG_MASK);
    return r;
}

fn is_empty(p: Partial) -> bool {
    return p.count_lo == 0u && (p.hi_flags >> COUNT_HI_SHIFT) == 0u;
}

fn is_inf_or_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

// An invocation's running state in the element pass: cheaper per element
// than a Partial (counts are derived once at the end: seen - nans).
struct Acc {
    s: f32,     // sum: high word
    c: f32,     // sum: accumulated two-sum error terms
    bs: f32,    // big sum (inputs >= 2^100, scaled by 2^-64): high word
    bc: f32,    // big sum: error terms
    key: u32,   // max/min: best order key so far
    seen: u32,  // elements looked at
    nans: u32,  // NaN elements among them
    flags: u32, // FLAG_*
}

fn acc_new() -> Acc {
    // Key 0 is below every non-NaN key and 0xffffffff above: the identities
    // of max and min.
    // Both sums start at -0.0, as in `identity`.
    return Acc(bitcast<f32>(0x80000000u), 0.0, bitcast<f32>(0x80000000u), 0.0, select(0xffffffffu, 0u, OP == OP_MAX), 0u, 0u, 0u);
}

// Adds a finite x below 2^100 to the double-single sum (Neumaier-style:
// error terms collect in c).
fn acc_two_sum(a: Acc, x: f32) -> Acc {
    var r = a;
    let se = two_sum(a.s, x);
    r.s = se.x;
    r.c = a.c + se.y;
    return r;
}

// Adds any finite x: inputs of magnitude >= 2^100 go, scaled, to the big sum.
fn acc_sum_any(a: Acc, x: f32) -> Acc {
    if (bitcast<u32>(x) & 0x7f800000u) >= BIG_EXP_BITS {
        var r = a;
        let se = two_sum(a.bs, x * BIG_SCALE);
        r.bs = se.x;
        r.bc = a.bc + se.y;
        return r;
    }
    return acc_two_sum(a, x);
}

fn best_key(a: u32, b: u32) -> u32 {
    return select(min(a, b), max(a, b), OP == OP_MAX);
}

// Folds one element (any value).
fn acc_add(a: Acc, x: f32) -> Acc {
    var r = a;
    let bits = bitcast<u32>(x);
    let mag = bits & 0x7fffffffu;
    r.seen = r.seen + 1u;
    if mag > 0x7f800000u {
        r.nans = r.nans + 1u;
        r.flags = r.flags | FLAG_NAN;
        return r;
    }
    if OP == OP_SUM {
        if mag == 0x7f800000u {
            r.flags = r.flags | select(FLAG_POS_INF, FLAG_NEG_INF, bits != mag);
            return r;
        }
        return acc_sum_any(r, x);
    }
    r.key = best_key(r.key, order_key(x));
    return r;
}

// Folds four elements in order x, y, z, w; the common case (all finite and
// below 2^100) skips the per-element tests.
fn acc_add4(a: Acc, v: vec4<f32>) -> Acc {
    let bits = bitcast<vec4<u32>>(v);
    let special = any((bits & vec4<u32>(0x7f800000u)) >= vec4<u32>(BIG_EXP_BITS));
    var r = a;
    // Rare (NaN, infinity or |x| >= 2^100): element by element. A loop of 0
    // or 4 passes rather than a branch: a CPU rasteriser runs both sides of
    // a branch, masked, but leaves a loop whose lanes are all done after
    // one pass.
    for (var i = 0u; i < select(0u, 4u, special); i++) {
        r = acc_add(r, v[i]);
    }
    if special {
        return r;
    }
    r.seen = r.seen + 4u;
    if OP == OP_SUM {
        return acc_two_sum(acc_two_sum(acc_two_sum(acc_two_sum(r, v.x), v.y), v.z), v.w);
    }
    let neg = (bits & vec4<u32>(0x80000000u)) != vec4<u32>(0u);
    let k = select(bits | vec4<u32>(0x80000000u), ~bits, neg);
    r.key = best_key(r.key, best_key(best_key(k.x, k.y), best_key(k.z, k.w)));
    return r;
}

fn key_to_float(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

fn acc_finish(a: Acc) -> Partial {
    let count = a.seen - a.nans;
    var p = Partial(a.s, a.c, count, a.flags, a.bs, a.bc, 0u, 0u);
    if OP == OP_SUM {
        // After an overflow the high word is +/-inf and the error terms are
        // NaN (inf - inf); the sum is the infinity.
        if is_inf_or_nan(a.s) {
            p.b = 0.0;
        }
        if is_inf_or_nan(a.bs) {
            p.big_b = 0.0;
        }
    } else {
        p.a = key_to_float(a.key);
        p.b = 0.0;
    }
    return p;
}

// Adds two double-single numbers (ph + pl) + (qh + ql), renormalised.
fn ds_combine(ph: f32, pl: f32, qh: f32, ql: f32) -> vec2<f32> {
    let se = two_sum(ph, qh);
    let s = se.x;
    var c = (pl + ql) + se.y;
    if is_inf_or_nan(s) {
        c = 0.0; // overflow: the error terms are meaningless
    }
    var hi = s;
    // Renormalise (fast two-sum) only when there is something to move,
    // which also keeps the sign of a zero sum (-0 + -0 stays -0).
    if c != 0.0 {
        hi = opaque(s + c);
        c = c - opaque(hi - s);
    }
    return vec2<f32>(hi, c);
}

// Combines two partials; `p` comes first in the canonical order.
fn combine(p: Partial, q: Partial) -> Partial {
    var r = add_count(p, q.count_lo, q.hi_flags >> COUNT_HI_SHIFT);
    r.hi_flags = r.hi_flags | (q.hi_flags & FLAG_MASK);
    if OP == OP_SUM {
        let lo = ds_combine(p.a, p.b, q.a, q.b);
        let big = ds_combine(p.big_a, p.big_b, q.big_a, q.big_b);
        r.a = lo.x;
        r.b = lo.y;
        r.big_a = big.x;
        r.big_b = big.y;
    } else if is_empty(p) {
        r.a = q.a;
    } else if !is_empty(q) {
        let take = select(order_key(q.a) < order_key(p.a), order_key(q.a) > order_key(p.a), OP == OP_MAX);
        r.a = select(p.a, q.a, take);
    }
    return r;
}

// Index of the segment that owns global unit `unit`: the last segment whose
// first_unit <= unit (empty segments own no unit and are skipped naturally).
fn find_segment(unit: u32) -> u32 {
    var lo = 0u;
    var hi = params.segment_count - 1u;
    while lo < hi {
        let mid = (lo + hi + 1u) / 2u;
        if segments[mid].first_unit <= unit {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    return lo;
}

struct UnitRange {
    start: u32, // first item, relative to the input binding
    len: u32,   // items in this unit
}

fn unit_range(unit: u32, unit_size: u32) -> UnitRange {
    let seg = find_segment(unit);
    let s = segments[seg];
    let j = unit - s.first_unit;
    let is_last = unit + 1u == segments[seg + 1u].first_unit;
    let len = select(unit_size, s.last_len, is_last);
    // Wrapping arithmetic on the low 32 bits: exact because the true
    // difference is below 2^32 (a binding holds fewer than 2^32 items).
    let start = s.offset_lo + j * unit_size - params.input_base_lo;
    return UnitRange(start, len);
}

// The per-invocation partials. A unit's result is a fixed tree over 256
// per-invocation partials (numbered p = 0..255, as invocations of a
// 256-wide workgroup); the wide kernels (wide.wgsl) compute partial p in
// invocation p, the narrow ones (narrow.wgsl) compute 32 of them in each of
// 8 invocations. Either way partial p is exactly the fold below.

// Whether a unit's block is full and 16-byte aligned (the vector fold).
fn is_full_block(range: UnitRange) -> bool {
    return range.len == BLOCK && (range.start & 3u) == 0u;
}

// Element pass, partial p of a full, aligned block at `range`: the elements
// 4*(p + k*256) .. +3, k = 0..7, folded in that order. All eight coalesced
// loads first (kept in registers: written out, not a local array).
fn fold_full_block(range: UnitRange, p: u32) -> Partial {
    let b = range.start / 4u + p;
    let v0 = in_vec4[b];
    let v1 = in_vec4[b + WG];
    let v2 = in_vec4[b + 2u * WG];
    let v3 = in_vec4[b + 3u * WG];
    let v4 = in_vec4[b + 4u * WG];
    let v5 = in_vec4[b + 5u * WG];
    let v6 = in_vec4[b + 6u * WG];
    let v7 = in_vec4[b + 7u * WG];
    var acc = acc_add4(acc_new(), v0);
    acc = acc_add4(acc, v1);
    acc = acc_add4(acc, v2);
    acc = acc_add4(acc, v3);
    acc = acc_add4(acc, v4);
    acc = acc_add4(acc, v5);
    acc = acc_add4(acc, v6);
    acc = acc_add4(acc, v7);
    return acc_finish(acc);
}

// The same fold for a short or unaligned block: whole, 16-byte aligned
// vec4s (all of an aligned short block's but its tail) take the vector
// fold, the rest scalar loads, masked. Steps k whose elements all lie past
// the unit's end would add nothing, so the loop stops before them (a bound
// uniform over the workgroup: a CPU rasteriser would otherwise run their
// masked scalar folds, which cost a 4096-item block more than its data).
fn fold_short_block(range: UnitRange, p: u32) -> Partial {
    var acc = acc_new();
    let aligned = (range.start & 3u) == 0u;
    let steps = min(VEC4_PER_THREAD, (range.len + 4u * WG - 1u) / (4u * WG));
    for (var k = 0u; k < steps; k++) {
        let i = 4u * (p + k * WG);
        let whole = aligned && i + 4u <= range.len;
        if whole {
            acc = acc_add4(acc, in_vec4[(range.start + i) / 4u]);
        }
        // A loop bound, not an else (see acc_add4).
        for (var j = 0u; j < select(4u, 0u, whole); j++) {
            if i + j < range.len {
                acc = acc_add(acc, in_scalar[range.start + i + j]);
            }
        }
    }
    return acc_finish(acc);
}

// Partial pass, partial p of a unit of up to GROUP partials at `range`: the
// partials p + k*256, k = 0..7, combined in that order.
fn fold_partials(range: UnitRange, p: u32) -> Partial {
    var acc = identity();
    for (var k = 0u; k < PARTIALS_PER_THREAD; k++) {
        let i = p + k * WG;
        if i < range.len {
            acc = combine(acc, in_partials[range.start + i]);
        }
    }
    return acc;
}
