// group.wgsl: exact, order-independent reductions keyed by group: group-by
// over unsorted keys, and partitions too small for a workgroup each.
//
// What it computes
//   For every row (one value and, in the key modes, one key) its group g,
//   then adds the value into group g's accumulator in global memory with
//   32-bit integer atomics. Integer addition and max commute, so the
//   accumulators hold the same bits whatever the order of rows, the
//   workgroup width or the device.
//   Group of a row, by MODE:
//     0 (32-bit keys): g = key - key_base (wrapping; int32 and uint32 keys)
//     1 (64-bit keys): g = key - key_base (int64 keys, two words a key)
//     2 (equal-size partitions): g = first_group + (first_skip + row) / size
//     3 (offsets): g = first_group + the last j with seg_start[j] <= row
//   Rows whose g falls outside [0, group_count) belong to another pass's
//   window of groups and are skipped (the host covers every group once).
//   Each group's accumulator (STRIDE words; shaders/finish_groups.wgsl and
//   src/keyed/accumulators.rs read it):
//     [0, LIMBS)          positive contributions to the sum, magnitudes in
//                         little-endian limbs on the dtype's grid (2^-149
//                         for float32, 2^-1074 for float64, 1 for integers):
//                         limbs limb_base .. limb_base + LIMBS of it (the
//                         host picks a span that holds every nonzero bit a
//                         pass adds, src/keyed/limbs.rs)
//     [LIMBS, 2 LIMBS)    negative contributions, magnitudes likewise
//     2 LIMBS + 0, 1      non-NaN values (lo, hi)
//     2 LIMBS + 2, 3      NaN values (lo, hi)
//     2 LIMBS + 4         flags (exact.wgsl's: NaN, +inf, -inf, a non-NaN
//                         float with a clear sign bit; rows added one by
//                         one set the last only for +0.0, its readers
//                         adding it where the positive limbs are nonzero)
//     2 LIMBS + 5, 6      max: best order key (lo, hi)
//     2 LIMBS + 7, 8      min: best complemented order key (lo, hi)
//     2 LIMBS + 9 ..      padding up to STRIDE (narrow layouts start each
//                         group on a 64-byte line)
//   Keys of 32-bit dtypes sit in the high word (as in exact.wgsl).
//   COMPACT passes (32-bit values added row by row) keep each group of
//   the window in workgroup memory in PW words instead (P_* below): a
//   64-bit two's complement sum with bit 0 at a grid position set by the
//   group's first value (P_BELOW binades under it), and 32-bit counts,
//   flags and keys; values more than P_SPAN positions above that bit or
//   under it go straight to `acc`. The workgroup adds them to `acc` at the
//   end.
//   64-bit keys (float64, int64) need two passes (PHASE 0: high words,
//   PHASE 1: low words among values whose high word is the group's best);
//   PHASE 1 adds nothing else.
//
//   Each invocation takes RUN rows of a unit. With DIRECT (keys that
//   change group on most rows, as random keys do) it adds each row straight
//   to its group's accumulators: a few atomics and no bookkeeping per row.
//   Otherwise it keeps what it learns about the current group in
//   registers: a 96-bit two's complement window of the sum anchored at the
//   first value's grid position (WIN_BELOW binades under it), the counts,
//   flags and best keys. It flushes them with atomics when the group
//   changes and at the end, so sorted keys and small partitions cost a few
//   atomics per run rather than per row. A value under the window's bit 0
//   or more than WIN_SPAN binades above it flushes the window and
//   re-anchors it. Runs take RUN consecutive rows, and so do DIRECT rows
//   on CPU adapters (TOUCH_FIRST); on GPUs DIRECT rows are t, t + WG,
//   t + 2 WG, ... of the unit, so a subgroup's invocations load adjacent
//   keys and values together.
//
// How it is dispatched
//   @workgroup_size(WG). The rows form units of WG * RUN rows; workgroup w
//   (workgroup_id.x + workgroup_id.y * num_workgroups.x on a 2-D grid) takes
//   units w, w + W, w + 2W, ... where W is the grid's size, so the host may
//   launch one workgroup per unit or fewer that take several (PRIVATE and
//   COMPACT passes do, to add their workgroup's accumulators to `acc` less
//   often). The host bounds the units a workgroup takes so that no
//   invocation runs 65535 loop iterations in all, where Mesa's llvmpipe
//   stops it (src/keyed/kernels.rs, units_per_private_workgroup).
//   Composed after a header (src/keyed/kernels.rs) defining WG, RUN, LIMBS,
//   STRIDE, WPE, WIN_BELOW, WIN_SPAN, PRIVATE, COMPACT, P_BELOW, P_SPAN,
//   PRIV_WORDS, TOUCH_FIRST and DTYPE (0 float32, 1 float64, 2 int32, 3 uint32,
//   4 int64); MODE, WANT_SUM, WANT_MAX, WANT_MIN, PHASE and DIRECT are
//   pipeline overrides.

override MODE: u32 = 0u;
override WANT_SUM: bool = true;
override WANT_MAX: bool = false;
override WANT_MIN: bool = false;
override PHASE: u32 = 0u;
override DIRECT: bool = false;

const FLAG_NAN: u32 = 1u;
const FLAG_POS_INF: u32 = 2u;
const FLAG_NEG_INF: u32 = 4u;
const FLAG_NONNEG: u32 = 8u;

const A_COUNT: u32 = 2u * LIMBS;
const A_NANS: u32 = 2u * LIMBS + 2u;
const A_FLAGS: u32 = 2u * LIMBS + 4u;
const A_MAX: u32 = 2u * LIMBS + 5u;
const A_MIN: u32 = 2u * LIMBS + 7u;

const NO_GROUP: u32 = 0xffffffffu;

// A COMPACT group's words in `wacc`.
const P_SUM: u32 = 0u;   // sum (lo, hi), 64-bit two's complement
const P_BASE: u32 = 2u;  // grid position of the sum's bit 0, plus one (0: unset)
const P_COUNT: u32 = 3u; // non-NaN values
const P_NANS: u32 = 4u;  // NaN values
const P_FLAGS: u32 = 5u;
const P_MAX: u32 = 6u;   // best order key (high word; 32-bit dtypes have no low word)
const P_MIN: u32 = 7u;   // best complemented order key
const PW: u32 = 8u;

struct Params {
    rows: u32,        // rows in this dispatch
    group_count: u32, // groups in the accumulator buffer
    key_base_lo: u32, // modes 0, 1: the key of group 0
    key_base_hi: u32,
    size: u32,        // mode 2: partition size
    first_group: u32, // modes 2, 3: group of the first row's partition (wrapping)
    first_skip: u32,  // mode 2: rows of that partition before the first row
    seg_count: u32,   // mode 3: entries in seg_start (the last is `rows`)
    limb_base: u32,   // limb 0 of the accumulators is this limb of the grid
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> keys: array<u32>;
@group(0) @binding(2) var<storage, read> values: array<u32>;
@group(0) @binding(3) var<storage, read_write> acc: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read> seg_start: array<u32>;

// PRIVATE: the window's accumulators, private to the workgroup (the same
// layout, PRIV_WORDS words), added to `acc` once at the end. COMPACT: the
// window's groups in PW words each.
var<workgroup> wacc: array<atomic<u32>, PRIV_WORDS>;

// The accumulators runs flush into: `wacc` when PRIVATE, else `acc`.
fn target_add(i: u32, v: u32, private_: bool) -> u32 {
    if private_ {
        return atomicAdd(&wacc[i], v);
    }
    return atomicAdd(&acc[i], v);
}

fn target_load(i: u32) -> u32 {
    if PRIVATE {
        return atomicLoad(&wacc[i]);
    }
    return atomicLoad(&acc[i]);
}

fn target_or(i: u32, v: u32) {
    if PRIVATE {
        atomicOr(&wacc[i], v);
    } else {
        atomicOr(&acc[i], v);
    }
}

fn target_max(i: u32, v: u32) {
    if PRIVATE {
        atomicMax(&wacc[i], v);
    } else {
        atomicMax(&acc[i], v);
    }
}

fn carry(sum: u32, addend: u32) -> u32 {
    return select(0u, 1u, sum < addend);
}

// Adds `x` to word `i` of the accumulators (the workgroup's when
// `private_`), carrying into the words above up to `end`: the old value
// atomicAdd returns says whether the add wrapped.
fn acc_add(first: u32, x: u32, end: u32, private_: bool) {
    var i = first;
    var v = x;
    while v != 0u && i < end {
        let old = target_add(i, v, private_);
        v = carry(old + v, v);
        i++;
    }
}

// Adds w + c (c a carry in of 0 or 1) at word `i` of the accumulators
// (the workgroup's when `private_`), when it is nonzero and under `end`,
// and returns the carry out: a multi-word addition costs one atomic a
// nonzero word, the carry of the word below folded into the next word's
// add rather than added on its own.
fn add_word(i: u32, w: u32, c: u32, end: u32, private_: bool) -> u32 {
    let v = w + c;
    var out = carry(v, w);
    if v != 0u && i < end {
        let old = target_add(i, v, private_);
        out |= carry(old + v, v);
    }
    return out;
}

// Adds the magnitude `m` (128 bits), scaled by 2^bit (a position on the
// full grid), to group g's positive or negative limbs. Words of m's
// shifted value under limb_base are zero (the host's rule), so their
// index, which wraps, is never used: add_word adds nothing for them.
fn flush_magnitude(g: u32, m: vec4<u32>, bit: u32, negative: bool) {
    let region = g * STRIDE + select(0u, LIMBS, negative);
    let end = region + LIMBS;
    let l = region + (bit >> 5u) - params.limb_base;
    let r = bit & 31u;
    // m << r over five words; (x >> 1) >> (31 - r) is x >> (32 - r), and 0 for r = 0.
    var c = add_word(l, m.x << r, 0u, end, PRIVATE);
    c = add_word(l + 1u, (m.y << r) | ((m.x >> 1u) >> (31u - r)), c, end, PRIVATE);
    c = add_word(l + 2u, (m.z << r) | ((m.y >> 1u) >> (31u - r)), c, end, PRIVATE);
    c = add_word(l + 3u, (m.w << r) | ((m.z >> 1u) >> (31u - r)), c, end, PRIVATE);
    c = add_word(l + 4u, (m.w >> 1u) >> (31u - r), c, end, PRIVATE);
    acc_add(l + 5u, c, end, PRIVATE);
}

// Adds a 64-bit count (lo, hi) at word `at` of the accumulators.
fn add_count(at: u32, lo: u32, hi: u32) {
    if lo != 0u {
        let old = target_add(at, lo, PRIVATE);
        let h = hi + carry(old + lo, lo);
        if h != 0u {
            target_add(at + 1u, h, PRIVATE);
        }
    } else if hi != 0u {
        target_add(at + 1u, hi, PRIVATE);
    }
}

// One value, decoded from its bits.
struct Value {
    special: u32,   // 0 finite, else the flag: FLAG_NAN, FLAG_POS_INF, FLAG_NEG_INF
    negative: bool, // sign bit set
    mag: vec2<u32>, // magnitude on the dtype's grid (lo, hi), shifted by `pos`
    pos: u32,       // grid position of mag's bit 0
    key: vec2<u32>, // order key (lo, hi): larger values have larger keys
}

fn value_at(row: u32) -> Value {
    var v: Value;
    if DTYPE == 0u {
        let b = values[row];
        let e = (b >> 23u) & 0xffu;
        let frac = b & 0x7fffffu;
        v.negative = (b >> 31u) != 0u;
        v.special = select(0u, select(select(FLAG_POS_INF, FLAG_NEG_INF, v.negative), FLAG_NAN, frac != 0u), e == 0xffu);
        v.mag = vec2<u32>(frac | select(0u, 0x800000u, e != 0u), 0u);
        v.pos = max(e, 1u) - 1u;
        v.key = vec2<u32>(0u, select(b | 0x80000000u, ~b, v.negative));
    } else if DTYPE == 1u {
        let lo = values[2u * row];
        let hi = values[2u * row + 1u];
        let e = (hi >> 20u) & 0x7ffu;
        let frac_hi = hi & 0xfffffu;
        v.negative = (hi >> 31u) != 0u;
        v.special = select(0u, select(select(FLAG_POS_INF, FLAG_NEG_INF, v.negative), FLAG_NAN, (frac_hi | lo) != 0u), e == 0x7ffu);
        v.mag = vec2<u32>(lo, frac_hi | select(0u, 0x100000u, e != 0u));
        v.pos = max(e, 1u) - 1u;
        v.key = select(vec2<u32>(lo, hi | 0x80000000u), ~vec2<u32>(lo, hi), v.negative);
    } else if DTYPE == 4u {
        let lo = values[2u * row];
        let hi = values[2u * row + 1u];
        v.negative = (hi >> 31u) != 0u;
        // |x| as 64 bits (2^63 for the most negative value fits).
        let n_lo = 0u - lo;
        let n_hi = ~hi + select(0u, 1u, lo == 0u);
        v.mag = select(vec2<u32>(lo, hi), vec2<u32>(n_lo, n_hi), v.negative);
        v.key = vec2<u32>(lo, hi ^ 0x80000000u);
    } else {
        let w = values[row];
        v.negative = DTYPE == 2u && (w >> 31u) != 0u;
        v.mag = vec2<u32>(select(w, 0u - w, v.negative), 0u);
        v.key = vec2<u32>(0u, select(w, w ^ 0x80000000u, DTYPE == 2u));
    }
    return v;
}

// Group of `row` (relative to the dispatch); `seg` is the offsets mode's
// running segment index, advanced as rows move forward.
fn group_of(row: u32, seg: ptr<function, u32>) -> u32 {
    if MODE == 0u {
        return keys[row] - params.key_base_lo;
    }
    if MODE == 1u {
        let lo = keys[2u * row];
        let hi = keys[2u * row + 1u];
        let d_lo = lo - params.key_base_lo;
        let d_hi = hi - params.key_base_hi - select(0u, 1u, lo < params.key_base_lo);
        return select(NO_GROUP, d_lo, d_hi == 0u);
    }
    while *seg + 1u < params.seg_count && seg_start[*seg + 1u] <= row {
        *seg += 1u;
    }
    return params.first_group + *seg;
}

// The last segment whose start is at or before `row` (offsets mode).
fn find_segment(row: u32) -> u32 {
    var lo = 0u;
    var hi = params.seg_count - 1u;
    while lo < hi {
        let mid = (lo + hi + 1u) / 2u;
        if seg_start[mid] <= row {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    return lo;
}

// What an invocation knows about its current group.
struct Run {
    g: u32,
    win: vec3<u32>, // the sum (96-bit two's complement), bit 0 at grid position `base`
    base: u32,
    has_window: bool,
    count: u32,   // non-NaN values (so the keys are set when nonzero)
    nans: u32,
    flags: u32,   // FLAG_NAN, FLAG_POS_INF, FLAG_NEG_INF
    nonneg: bool, // a finite float with a clear sign bit (FLAG_NONNEG)
    best_max: vec2<u32>,
    best_min: vec2<u32>, // complemented keys
}

fn run_new(g: u32) -> Run {
    var r: Run;
    r.g = g;
    return r;
}

fn key_max(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let b_wins = b.y > a.y || (b.y == a.y && b.x > a.x);
    return select(a, b, b_wins);
}

// Hands a run's state to its group's accumulator.
fn flush_run(r: Run) {
    if r.g == NO_GROUP {
        return;
    }
    let at = r.g * STRIDE;
    if PHASE == 1u {
        // Low words of 64-bit keys, among values with the group's high word.
        if r.count != 0u {
            if WANT_MAX {
                atomicMax(&acc[at + A_MAX], r.best_max.x);
            }
            if WANT_MIN {
                atomicMax(&acc[at + A_MIN], r.best_min.x);
            }
        }
        return;
    }
    if WANT_SUM && r.has_window {
        flush_window(r);
    }
    add_count(at + A_COUNT, r.count, 0u);
    add_count(at + A_NANS, r.nans, 0u);
    let flags = r.flags | select(0u, FLAG_NONNEG, r.nonneg);
    if flags != 0u && (target_load(at + A_FLAGS) & flags) != flags {
        target_or(at + A_FLAGS, flags);
    }
    if r.count != 0u {
        if WANT_MAX && r.best_max.y > target_load(at + A_MAX + 1u) {
            target_max(at + A_MAX + 1u, r.best_max.y);
        }
        if WANT_MIN && r.best_min.y > target_load(at + A_MIN + 1u) {
            target_max(at + A_MIN + 1u, r.best_min.y);
        }
    }
}

// The magnitude `mag` shifted left by s (< 96, with the result inside 96
// bits), as 96 bits.
fn shifted(mag: vec2<u32>, s: u32) -> vec3<u32> {
    let b = s & 31u;
    let x = vec3<u32>(mag.x << b, (mag.y << b) | ((mag.x >> 1u) >> (31u - b)), (mag.y >> 1u) >> (31u - b));
    let w = s >> 5u;
    return select(select(x, vec3<u32>(0u, x.x, x.y), w == 1u), vec3<u32>(0u, 0u, x.x), w == 2u);
}

// 96-bit addition a + b + c (x = lowest word, c a carry in of 0 or 1).
fn add96(a: vec3<u32>, b: vec3<u32>, c: u32) -> vec3<u32> {
    let t0 = a.x + b.x;
    let s0 = t0 + c;
    let c0 = carry(t0, b.x) + carry(s0, c);
    let t1 = a.y + b.y;
    let s1 = t1 + c0;
    let c1 = carry(t1, b.y) + carry(s1, c0);
    return vec3<u32>(s0, s1, a.z + b.z + c1);
}

// Flushes the window: its magnitude to the positive or the negative limbs
// by its sign (the host reads positive minus negative limbs).
fn flush_window(r: Run) {
    let negative = (r.win.z >> 31u) != 0u;
    let n = select(0u, 0xffffffffu, negative);
    let mag = add96(r.win ^ vec3<u32>(n), vec3<u32>(0u), n & 1u);
    if any(mag != vec3<u32>(0u)) {
        flush_magnitude(r.g, vec4<u32>(mag, 0u), r.base, negative);
    }
}

// Adds one row's value to the run (phase 0), or returns false, adding
// nothing, when the value lies outside the run's window (the caller flushes
// the window and adds the value again). A window's bit 0 sits
// WIN_BELOW binades under the first value's position, and it takes values
// up to WIN_SPAN positions above its bit 0: at most RUN values of under
// 2^(WIN_SPAN + mantissa bits) <= 2^(95 - log2 RUN) each, so the signed sum
// stays inside 96-bit two's complement.
fn run_add(r: ptr<function, Run>, v: Value) -> bool {
    // Infinities never enter the sum; zeros add nothing.
    let summed = WANT_SUM && v.special == 0u && any(v.mag != vec2<u32>(0u));
    if summed && (*r).has_window && (v.pos < (*r).base || v.pos - (*r).base > WIN_SPAN) {
        return false;
    }
    if v.special == FLAG_NAN {
        (*r).nans += 1u;
        (*r).flags |= FLAG_NAN;
        return true;
    }
    (*r).count += 1u;
    (*r).flags |= v.special;
    if DTYPE <= 1u {
        (*r).nonneg = (*r).nonneg || (!v.negative && v.special == 0u);
    }
    if WANT_MAX {
        (*r).best_max = key_max((*r).best_max, v.key);
    }
    if WANT_MIN {
        (*r).best_min = key_max((*r).best_min, ~v.key);
    }
    if !summed {
        return true;
    }
    if !(*r).has_window {
        (*r).has_window = true;
        (*r).base = max(v.pos, WIN_BELOW) - WIN_BELOW;
        (*r).win = vec3<u32>(0u);
    }
    // Negative values are added as the one's complement plus one.
    let n = select(0u, 0xffffffffu, v.negative);
    (*r).win = add96((*r).win, shifted(v.mag, v.pos - (*r).base) ^ vec3<u32>(n), n & 1u);
    return true;
}

// Adds one row's key to the run (phase 1: low words only, and only for
// values whose high word is the group's best).
fn run_add_low(r: ptr<function, Run>, v: Value) {
    if v.special == FLAG_NAN {
        return;
    }
    let at = (*r).g * STRIDE;
    if WANT_MAX && v.key.y == atomicLoad(&acc[at + A_MAX + 1u]) {
        (*r).best_max.x = max((*r).best_max.x, v.key.x);
        (*r).count = 1u;
    }
    let k = ~v.key;
    if WANT_MIN && k.y == atomicLoad(&acc[at + A_MIN + 1u]) {
        (*r).best_min.x = max((*r).best_min.x, k.x);
        (*r).count = 1u;
    }
}

@compute @workgroup_size(WG)
fn reduce_groups(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if PRIVATE || COMPACT {
        // The private accumulators start at zero whether or not wgpu
        // zero-initialises workgroup memory.
        let words = params.group_count * select(STRIDE, PW, COMPACT);
        for (var w = t; w < words; w += WG) {
            atomicStore(&wacc[w], 0u);
        }
        workgroupBarrier();
    }
    // Each invocation takes RUN consecutive rows of a unit, so partitions
    // and sorted keys give long runs; rows added one by one on a GPU are
    // strided by WG instead (coalesced).
    let per_unit = WG * RUN;
    let units = params.rows / per_unit + select(0u, 1u, params.rows % per_unit != 0u);
    for (var unit = wid.x + wid.y * nwg.x; unit < units; unit += nwg.x * nwg.y) {
        if DIRECT && !TOUCH_FIRST {
            direct_rows_strided(unit * per_unit + t);
            continue;
        }
        let first = (unit * WG + t) * RUN;
        if first >= params.rows {
            continue;
        }
        if DIRECT {
            direct_rows(first);
        } else {
            run_rows(first);
        }
    }
    if PRIVATE {
        flush_private(t);
    }
    if COMPACT {
        flush_compact(t);
    }
}

// Adds rows first .. first + RUN (those in the dispatch) run by run.
fn run_rows(first: u32) {
    var seg = 0u;
    if MODE == 3u {
        seg = find_segment(first);
    }
    // Equal sizes: the group of row i and the position in it.
    var eq_g = 0u;
    var eq_in = 0u;
    if MODE == 2u {
        let p = params.first_skip + first;
        eq_g = params.first_group + p / params.size;
        eq_in = p % params.size;
    }
    // The inner loop adds rows to the current run until a row needs a
    // flush first (another group, or a value outside the window) or
    // the rows end; the flushes (atomics) live outside it, so devices
    // that run both sides of a branch under a mask (CPU rasterizers)
    // pay for them only where a run or window ends. A row that needs a
    // flush is read again after it.
    var r = run_new(NO_GROUP);
    var i = 0u;
    loop {
        var g = NO_GROUP;
        var miss = false;
        loop {
            if i >= RUN {
                break;
            }
            let row = first + i;
            if row >= params.rows {
                break;
            }
            if MODE == 2u {
                g = eq_g;
            } else {
                g = group_of(row, &seg);
            }
            if g >= params.group_count {
                g = NO_GROUP;
            }
            if g != r.g {
                miss = true;
                break;
            }
            if g != NO_GROUP {
                let v = value_at(row);
                if PHASE == 0u {
                    if !run_add(&r, v) {
                        miss = true;
                        break;
                    }
                } else {
                    run_add_low(&r, v);
                }
            }
            i++;
            if MODE == 2u {
                // Equal sizes: the next row's group.
                eq_in += 1u;
                if eq_in == params.size {
                    eq_g += 1u;
                    eq_in = 0u;
                }
            }
        }
        if !miss {
            break;
        }
        if g != r.g {
            flush_run(r);
            r = run_new(g);
        } else {
            flush_window(r);
            r.has_window = false;
        }
    }
    flush_run(r);
}

// Adds rows first .. first + RUN (those in the dispatch) one by one, each
// straight to its group's accumulators (keyed modes only).
fn direct_rows(first: u32) {
    if TOUCH_FIRST && !PRIVATE && !COMPACT && PHASE == 0u {
        direct_row_pairs(first);
        return;
    }
    let end = min(first + RUN, params.rows);
    for (var row = first; row < end; row++) {
        add_direct(row);
    }
}

// Adds rows first, first + WG, ... (RUN of them, those in the dispatch)
// one by one, as direct_rows does: the rows of a GPU's direct passes.
fn direct_rows_strided(first: u32) {
    for (var i = 0u; i < RUN; i++) {
        let row = first + i * WG;
        if row >= params.rows {
            break;
        }
        add_direct(row);
    }
}

// Adds one row straight to its group's accumulators (keyed modes only).
fn add_direct(row: u32) {
    var seg = 0u;
    let g = group_of(row, &seg);
    if g < params.group_count {
        let v = value_at(row);
        if COMPACT {
            add_row_compact(g, v);
        } else if PHASE == 0u {
            add_row(g, v);
        } else {
            add_row_low(g, v);
        }
    }
}

// direct_rows for CPU adapters into the global accumulators (phase 0): two
// rows at a time, both touched (touch_row) before either is added, so the
// cache misses of both overlap.
fn direct_row_pairs(first: u32) {
    let end = min(first + RUN, params.rows);
    var seg = 0u;
    var touched = 0u;
    for (var row = first; row < end; row += 2u) {
        let next = min(row + 1u, end - 1u);
        let g0 = group_of(row, &seg);
        let g1 = select(NO_GROUP, group_of(next, &seg), row + 1u < end);
        let v0 = value_at(row);
        let v1 = value_at(next);
        let in0 = g0 < params.group_count;
        let in1 = g1 < params.group_count;
        if in0 {
            touched ^= touch_row(g0, v0);
        }
        if in1 {
            touched ^= touch_row(g1, v1);
        }
        if in0 {
            add_row(g0, v0);
        }
        if in1 {
            add_row(g1, v1);
        }
    }
    // Keeps the touching loads (unused loads would be dropped); never true
    // where rows were added, and adding 0 changes nothing anyway.
    if params.rows == 0u && touched == 1u {
        atomicAdd(&acc[0], 0u);
    }
}

// TOUCH_FIRST (CPU adapters): loads the words of group g's accumulator that
// add_row changes for `v` before it changes them. A CPU driver runs each
// atomic lane after lane, every one waiting for its cache line, while the
// plain loads of all lanes overlap their misses; the atomics then find
// their lines in cache. Returns the loaded words folded together.
fn touch_row(g: u32, v: Value) -> u32 {
    let at = g * STRIDE;
    var t = atomicLoad(&acc[at + A_COUNT]);
    if STRIDE == 16u {
        // A 16-word group fills one 64-byte line (where the buffer starts
        // on one, as device allocations do): one load brings it all, and
        // each load is a loop over the lanes on a CPU driver.
        return t;
    }
    // The limb the value's low bits go to (nonzero finite values only: a
    // zero's position may lie under limb_base).
    let limb = select(0u, (v.pos >> 5u) - params.limb_base, v.special == 0u && any(v.mag != vec2<u32>(0u)));
    t ^= atomicLoad(&acc[at + select(0u, LIMBS, v.negative) + limb]);
    if WANT_MAX {
        t ^= atomicLoad(&acc[at + A_MAX + 1u]);
    }
    if WANT_MIN {
        t ^= atomicLoad(&acc[at + A_MIN + 1u]);
    }
    return t;
}

// Adds one value to group g's accumulators: what flush_run does for a run
// of one row.
fn add_row(g: u32, v: Value) {
    let at = g * STRIDE;
    if v.special == FLAG_NAN {
        add_count(at + A_NANS, 1u, 0u);
        if (target_load(at + A_FLAGS) & FLAG_NAN) == 0u {
            target_or(at + A_FLAGS, FLAG_NAN);
        }
        return;
    }
    add_count(at + A_COUNT, 1u, 0u);
    // A positive nonzero value shows in the positive limbs, which readers of
    // the accumulators take as FLAG_NONNEG (finish_groups.wgsl,
    // src/keyed/accumulators.rs); only +0.0 sets the flag here, so most rows
    // skip reading the flags.
    let nonneg = DTYPE <= 1u && !v.negative && v.special == 0u && all(v.mag == vec2<u32>(0u));
    let flags = v.special | select(0u, FLAG_NONNEG, nonneg);
    if flags != 0u && (target_load(at + A_FLAGS) & flags) != flags {
        target_or(at + A_FLAGS, flags);
    }
    if WANT_MAX && v.key.y > target_load(at + A_MAX + 1u) {
        target_max(at + A_MAX + 1u, v.key.y);
    }
    if WANT_MIN && ~v.key.y > target_load(at + A_MIN + 1u) {
        target_max(at + A_MIN + 1u, ~v.key.y);
    }
    if WANT_SUM && v.special == 0u && any(v.mag != vec2<u32>(0u)) {
        flush_magnitude(g, vec4<u32>(v.mag, 0u, 0u), v.pos, v.negative);
    }
}

// Phase 1 of one value: its key's low word, where its high word is the
// group's best.
fn add_row_low(g: u32, v: Value) {
    if v.special == FLAG_NAN {
        return;
    }
    let at = g * STRIDE;
    if WANT_MAX && v.key.y == atomicLoad(&acc[at + A_MAX + 1u]) {
        atomicMax(&acc[at + A_MAX], v.key.x);
    }
    let k = ~v.key;
    if WANT_MIN && k.y == atomicLoad(&acc[at + A_MIN + 1u]) {
        atomicMax(&acc[at + A_MIN], k.x);
    }
}

// Adds the workgroup's private accumulators to `acc`: limbs and counts
// word by word with their carries, flags with OR, keys with max (PRIVATE
// serves phase 0 only, which fills the keys' high words).
fn flush_private(t: u32) {
    workgroupBarrier();
    let words = params.group_count * STRIDE;
    for (var w = t; w < words; w += WG) {
        let x = atomicLoad(&wacc[w]);
        if x == 0u {
            continue;
        }
        let f = w % STRIDE;
        let region = w - f + select(0u, LIMBS, f >= LIMBS);
        if f < 2u * LIMBS {
            acc_add(w, x, region + LIMBS, false);
        } else if f == A_COUNT || f == A_NANS {
            acc_add(w, x, w + 2u, false);
        } else if f == A_COUNT + 1u || f == A_NANS + 1u {
            acc_add(w, x, w + 1u, false);
        } else if f == A_FLAGS {
            atomicOr(&acc[w], x);
        } else {
            atomicMax(&acc[w], x);
        }
    }
}

// Adds one value to group g's COMPACT accumulators in workgroup memory (or
// its sum to `acc`, when it lies outside the group's window).
fn add_row_compact(g: u32, v: Value) {
    let p = g * PW;
    if v.special == FLAG_NAN {
        atomicAdd(&wacc[p + P_NANS], 1u);
        if (atomicLoad(&wacc[p + P_FLAGS]) & FLAG_NAN) == 0u {
            atomicOr(&wacc[p + P_FLAGS], FLAG_NAN);
        }
        return;
    }
    atomicAdd(&wacc[p + P_COUNT], 1u);
    let nonneg = DTYPE <= 1u && !v.negative && v.special == 0u;
    let flags = v.special | select(0u, FLAG_NONNEG, nonneg);
    if flags != 0u && (atomicLoad(&wacc[p + P_FLAGS]) & flags) != flags {
        atomicOr(&wacc[p + P_FLAGS], flags);
    }
    if WANT_MAX && v.key.y > atomicLoad(&wacc[p + P_MAX]) {
        atomicMax(&wacc[p + P_MAX], v.key.y);
    }
    if WANT_MIN && ~v.key.y > atomicLoad(&wacc[p + P_MIN]) {
        atomicMax(&wacc[p + P_MIN], ~v.key.y);
    }
    if !WANT_SUM || v.special != 0u || all(v.mag == vec2<u32>(0u)) {
        return;
    }
    // The group's window: set by its first value (compare-exchange, so
    // every invocation agrees on it).
    var base = atomicLoad(&wacc[p + P_BASE]);
    let want = max(v.pos, P_BELOW) - P_BELOW + 1u;
    while base == 0u {
        let r = atomicCompareExchangeWeak(&wacc[p + P_BASE], 0u, want);
        base = select(r.old_value, want, r.exchanged);
    }
    base -= 1u;
    if v.pos < base || v.pos - base > P_SPAN {
        flush_magnitude(g, vec4<u32>(v.mag, 0u, 0u), v.pos, v.negative);
        return;
    }
    // Two's complement of the shifted magnitude (mag.y is 0 for 32-bit
    // dtypes; P_SPAN keeps the sum of a workgroup's values inside 63 bits).
    let s = v.pos - base;
    var x = vec2<u32>(v.mag.x << (s & 31u), (v.mag.x >> 1u) >> (31u - (s & 31u)));
    if s >= 32u {
        x = vec2<u32>(0u, v.mag.x << (s - 32u));
    }
    if v.negative {
        x = vec2<u32>(0u - x.x, ~x.y + select(0u, 1u, x.x == 0u));
    }
    let old = atomicAdd(&wacc[p + P_SUM], x.x);
    let hi = x.y + carry(old + x.x, x.x);
    if hi != 0u {
        atomicAdd(&wacc[p + P_SUM + 1u], hi);
    }
}

// Adds the workgroup's COMPACT accumulators to `acc`, a group per
// invocation at a time.
fn flush_compact(t: u32) {
    workgroupBarrier();
    for (var g = t; g < params.group_count; g += WG) {
        // The group's words as a run (its 64-bit sum sign-extended to the
        // run's 96-bit window), flushed as runs are.
        let p = g * PW;
        var r = run_new(g);
        r.count = atomicLoad(&wacc[p + P_COUNT]);
        r.nans = atomicLoad(&wacc[p + P_NANS]);
        if r.count == 0u && r.nans == 0u {
            continue;
        }
        r.flags = atomicLoad(&wacc[p + P_FLAGS]);
        r.best_max = vec2<u32>(0u, atomicLoad(&wacc[p + P_MAX]));
        r.best_min = vec2<u32>(0u, atomicLoad(&wacc[p + P_MIN]));
        let base = atomicLoad(&wacc[p + P_BASE]);
        r.has_window = base != 0u;
        r.base = base - select(0u, 1u, r.has_window);
        let hi = atomicLoad(&wacc[p + P_SUM + 1u]);
        r.win = vec3<u32>(atomicLoad(&wacc[p + P_SUM]), hi, select(0u, 0xffffffffu, (hi >> 31u) != 0u));
        flush_run(r);
    }
}
