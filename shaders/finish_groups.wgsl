// finish_groups.wgsl: finishes keyed groups on the device. Each group's
// accumulator (shaders/group.wgsl's layout, STRIDE words, LIMBS limbs a
// side from limb `limb_base` of the full grid) becomes a record
// of REC words from which the host takes results without arithmetic on the
// exact sum, and which it reads back instead of the accumulators (16 to 145
// words a group):
//   0, 1    non-NaN values (lo, hi)
//   2, 3    NaN values (lo, hi)
//   4       flags; FLAG_NONNEG also where the positive limbs are nonzero
//           (rows added one by one flag only +0.0; floats only)
//   5, 6    max: best order key (lo, hi)
//   7, 8    min: best complemented order key (lo, hi)
//   9       ST_ZERO: the exact sum is zero; ST_OVERFLOW: an integer sum
//           outside int64
//   10, 11  float dtypes: the exact sum (positive minus negative limbs)
//           rounded once to nearest-even in the sum type (float32 bits in
//           word 10 for float32 values, float64 bits otherwise); integer
//           dtypes: the sum as int64 (lo, hi)
//   12, 13  with WANT_MEAN: the exact sum divided by the non-NaN count,
//           rounded once (float32 for float32 values, float64 otherwise)
// The arithmetic is src/exact.rs's round_to_float and divide_and_round
// step for step (the mean divides the sum's top 128 bits and takes the
// rest as the sticky bit); the host's exact results are what the tests
// hold it to. Sums and means of groups with NaN or infinities are the
// finite sums' (the host applies the NaN policy and infinities).
//
// How it is dispatched
//   @workgroup_size(64), one invocation per group: invocation i of
//   workgroup w = workgroup_id.x + workgroup_id.y * num_workgroups.x
//   finishes group w * 64 + i of the `groups` in the window. Composed after
//   a header (src/keyed/finish.rs) defining LIMBS, STRIDE and DTYPE (0
//   float32, 1 float64, 2 int32, 3 uint32, 4 int64); WANT_SUM and
//   WANT_MEAN are pipeline overrides.

override WANT_SUM: bool = true;
override WANT_MEAN: bool = false;

const REC: u32 = 14u;
const A_COUNT: u32 = 2u * LIMBS;
const A_FLAGS: u32 = 2u * LIMBS + 4u;
const FLAG_NONNEG: u32 = 8u;
const ST_ZERO: u32 = 1u;
const ST_OVERFLOW: u32 = 2u;

struct FinishParams {
    groups: u32,
    limb_base: u32, // limb 0 of the accumulators is this limb of the full grid

    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> fparams: FinishParams;
@group(0) @binding(1) var<storage, read> acc: array<u32>;
@group(0) @binding(2) var<storage, read_write> rec: array<u32>;

// The magnitude of the group's sum (little-endian words).
var<private> num: array<u32, LIMBS>;

fn bit_len(x: u32) -> u32 {
    return 32u - countLeadingZeros(x);
}

fn bit_len64(x: vec2<u32>) -> u32 {
    return select(bit_len(x.x), 32u + bit_len(x.y), x.y != 0u);
}

// The five words of the magnitude ending at its highest nonzero one, as
// one 160-bit value W (`low`: words t - 4 .. t - 1, `top`: word t, where t
// may be under 4 and the words under word 0 are zeros), and whether any
// word under them is nonzero. Bits of W are picked by shifts and selects,
// not by indexing the private array with a per-invocation index.
struct Head {
    t: i32,     // index of the highest nonzero word (-1: the magnitude is 0)
    low: vec4<u32>,
    top: u32,
    under: bool,
}

// Word j (0..4) of W; 0 for j >= 5.
fn head_word(h: Head, j: u32) -> u32 {
    return select(select(select(select(select(0u, h.top, j == 4u), h.low.w, j == 3u), h.low.z, j == 2u), h.low.y, j == 1u), h.low.x, j == 0u);
}

// Bits lo .. lo + 31 of W.
fn head_bits(h: Head, lo: u32) -> u32 {
    let j = lo >> 5u;
    let s = lo & 31u;
    // (hi << 1) << (31 - s) is hi << (32 - s), and 0 for s = 0.
    return (head_word(h, j) >> s) | ((head_word(h, j + 1u) << 1u) << (31u - s));
}

// Whether any of bits 0 .. n - 1 (n <= 32) of W's lowest word `w` is set.
fn low_bits_set(w: u32, n: u32) -> bool {
    return (w & select((1u << n) - 1u, 0xffffffffu, n >= 32u)) != 0u;
}

// The head of `num` (see Head), in one pass with the same index for every
// invocation.
fn head_of_num() -> Head {
    var h: Head;
    h.t = -1;
    // The four words under word i, and whether any word under those is set.
    var under4 = vec4<u32>(0u);
    var fell = false;
    for (var i = 0u; i < LIMBS; i++) {
        let x = num[i];
        if x != 0u {
            h.t = i32(i);
            h.low = under4;
            h.top = x;
            h.under = fell;
        }
        fell = fell || under4.x != 0u;
        under4 = vec4<u32>(under4.y, under4.z, under4.w, x);
    }
    return h;
}

// x >> s for 64-bit x (lo, hi); 0 for s >= 64.
fn shr64(x: vec2<u32>, s: u32) -> vec2<u32> {
    if s >= 64u {
        return vec2<u32>(0u);
    }
    if s >= 32u {
        return vec2<u32>(x.y >> (s - 32u), 0u);
    }
    // (hi << 1) << (31 - s) is hi << (32 - s), and 0 for s = 0.
    return vec2<u32>((x.x >> s) | ((x.y << 1u) << (31u - s)), x.y >> s);
}

// Whether any of bits 0 .. n - 1 of 64-bit x is set.
fn any_low(x: vec2<u32>, n: u32) -> bool {
    if n >= 64u {
        return any(x != vec2<u32>(0u));
    }
    if n >= 32u {
        return x.x != 0u || (x.y & ((1u << (n - 32u)) - 1u)) != 0u;
    }
    return (x.x & ((1u << n) - 1u)) != 0u;
}

// 64-bit x (nonzero, its top bit at p or above) x 2^grid rounded to
// nearest-even with `p` bits, the lowest kept bit not under 2^min_exp;
// `sticky` says a nonzero remainder lies under bit 0. mant 0: zero.
struct Rounded {
    mant: vec2<u32>,
    exp: i32,
    inf: bool,
}

fn round64(x: vec2<u32>, p: u32, min_exp: i32, max_exp: i32, grid: i32, sticky_in: bool) -> Rounded {
    var r: Rounded;
    let top = i32(bit_len64(x)) - 1;
    // At least 1: the top bit is at p or above.
    let lowest = max(top - i32(p) + 1, min_exp - grid);
    var mant = shr64(x, u32(lowest));
    let round_bit = shr64(x, u32(lowest - 1)).x & 1u;
    let sticky = sticky_in || any_low(x, u32(lowest - 1));
    var exp = lowest + grid;
    if round_bit == 1u && (sticky || (mant.x & 1u) == 1u) {
        mant = vec2<u32>(mant.x + 1u, mant.y + select(0u, 1u, mant.x == 0xffffffffu));
        if bit_len64(mant) > p {
            mant = shr64(mant, 1u);
            exp += 1;
        }
    }
    if all(mant == vec2<u32>(0u)) {
        return r;
    }
    r.mant = mant;
    r.exp = exp;
    r.inf = exp + i32(bit_len64(mant)) - 1 > max_exp;
    return r;
}

// A rounded float32 value's bits.
fn f32_bits(r: Rounded, negative: bool) -> u32 {
    let sign = select(0u, 0x80000000u, negative);
    if r.inf {
        return sign | 0x7f800000u;
    }
    if r.mant.x == 0u {
        return sign;
    }
    let len = bit_len(r.mant.x);
    let top_exp = r.exp + i32(len) - 1;
    if top_exp >= -126 {
        return sign | (u32(top_exp + 127) << 23u) | ((r.mant.x << (24u - len)) & 0x7fffffu);
    }
    return sign | (r.mant.x << u32(r.exp + 149));
}

// x << s for 64-bit x (lo, hi), s < 64.
fn shl64(x: vec2<u32>, s: u32) -> vec2<u32> {
    if s >= 32u {
        return vec2<u32>(0u, x.x << (s - 32u));
    }
    return vec2<u32>(x.x << s, (x.y << s) | ((x.x >> 1u) >> (31u - s)));
}

// A rounded float64 value's bits (lo, hi).
fn f64_bits(r: Rounded, negative: bool) -> vec2<u32> {
    let sign = select(0u, 0x80000000u, negative);
    if r.inf {
        return vec2<u32>(0u, sign | 0x7ff00000u);
    }
    if all(r.mant == vec2<u32>(0u)) {
        return vec2<u32>(0u, sign);
    }
    let len = bit_len64(r.mant);
    let top_exp = r.exp + i32(len) - 1;
    if top_exp >= -1022 {
        let frac = shl64(r.mant, 53u - len);
        return vec2<u32>(frac.x, sign | (u32(top_exp + 1023) << 20u) | (frac.y & 0xfffffu));
    }
    let m = shl64(r.mant, u32(r.exp + 1074));
    return vec2<u32>(m.x, sign | m.y);
}

// 64-bit x (its top bit at 55 or above) x 2^grid rounded once in the sum
// type, as (lo, hi) bits.
fn rounded_bits(x: vec2<u32>, grid: i32, sticky: bool, negative: bool) -> vec2<u32> {
    if DTYPE == 0u {
        return vec2<u32>(f32_bits(round64(x, 24u, -149, 127, grid, sticky), negative), 0u);
    }
    return f64_bits(round64(x, 53u, -1074, 1023, grid, sticky), negative);
}

// Bit 0 of the accumulator's limbs: the dtype's grid moved up by the
// limbs under the ones held (0 for integers, which are held from limb 0).
fn grid_exponent() -> i32 {
    let held = 32 * i32(fparams.limb_base);
    if DTYPE == 0u {
        return -149 + held;
    }
    if DTYPE == 1u {
        return -1074 + held;
    }
    return 0;
}

// 96-bit r >= 64-bit c.
fn at_least(r: vec3<u32>, c: vec2<u32>) -> bool {
    return r.z != 0u || r.y > c.y || (r.y == c.y && r.x >= c.x);
}

// `num` (nonzero) x 2^grid divided by the count c (nonzero), rounded once:
// the top 128 bits H of `num` (bit 127 set) divided bit by bit. After
// bit_len(c) + p + 1 of them (p: the sum type's precision) the quotient q
// of the bits taken lies in [2^p, 2^(p + 2)): the p kept bits and the
// rounding bit, inside 64 bits. The remainder, the bits of H not taken and
// the bits of `num` under H are zero exactly when the rest of the quotient
// is: they make the sticky bit.
fn mean_bits(c: vec2<u32>, grid: i32, head: Head, negative: bool) -> vec2<u32> {
    // W's top bit is at 128 + tb: H is W >> (tb + 1), the bits under it
    // W's lowest tb + 1 and the words under W.
    let tb = bit_len(head.top) - 1u;
    let k = head.t * 32 + i32(tb) - 127;
    // H, shifted left a bit a step: its top bit is the next one taken, and
    // what is left of it at the end is the bits not taken.
    var h = vec4<u32>(
        head_bits(head, tb + 1u),
        head_bits(head, tb + 33u),
        head_bits(head, tb + 65u),
        head_bits(head, tb + 97u),
    );
    let below = head.under || low_bits_set(head.low.x, tb + 1u);
    let steps = bit_len64(c) + select(54u, 25u, DTYPE == 0u);
    var r = vec3<u32>(0u);
    var q = vec2<u32>(0u);
    for (var i = 0u; i < steps; i++) {
        let b = h.w >> 31u;
        h = vec4<u32>(h.x << 1u, (h.y << 1u) | (h.x >> 31u), (h.z << 1u) | (h.y >> 31u), (h.w << 1u) | (h.z >> 31u));
        r = vec3<u32>((r.x << 1u) | b, (r.y << 1u) | (r.x >> 31u), (r.z << 1u) | (r.y >> 31u));
        q = vec2<u32>(q.x << 1u, (q.y << 1u) | (q.x >> 31u));
        if at_least(r, c) {
            let lo = r.x - c.x;
            let borrow = select(0u, 1u, r.x < c.x);
            let mid = r.y - c.y - borrow;
            let borrow2 = select(0u, 1u, r.y < c.y || (r.y == c.y && borrow == 1u));
            r = vec3<u32>(lo, mid, r.z - borrow2);
            q.x |= 1u;
        }
    }
    let left = 128u - steps;
    let sticky = below || any(h != vec4<u32>(0u)) || any(r != vec3<u32>(0u));
    return rounded_bits(q, grid + k + i32(left), sticky, negative);
}

@compute @workgroup_size(64)
fn finish_groups(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = (wid.x + wid.y * nwg.x) * 64u + t;
    if g >= fparams.groups {
        return;
    }
    let at = g * STRIDE;
    let out = g * REC;
    for (var i = 0u; i < 9u; i++) {
        rec[out + i] = acc[at + A_COUNT + i];
    }
    var status = 0u;
    var sum = vec2<u32>(0u);
    var mean = vec2<u32>(0u);
    if WANT_SUM {
        // Positive minus negative limbs, two's complement (the sum stays
        // inside them by construction, so the top bit is its sign; the
        // host picks narrow limbs by the same rule, src/keyed/limbs.rs).
        var borrow = 0u;
        var positive = false;
        for (var i = 0u; i < LIMBS; i++) {
            let p = acc[at + i];
            let n = acc[at + LIMBS + i];
            positive = positive || p != 0u;
            let d = p - n;
            num[i] = d - borrow;
            borrow = select(0u, 1u, p < n || (p == n && borrow == 1u));
        }
        if DTYPE <= 1u && positive {
            rec[out + 4u] |= FLAG_NONNEG;
        }
        let negative = (num[LIMBS - 1u] >> 31u) != 0u;
        if negative {
            var carry = 1u;
            for (var i = 0u; i < LIMBS; i++) {
                let v = ~num[i] + carry;
                carry = select(0u, 1u, v == 0u && carry == 1u);
                num[i] = v;
            }
        }
        let head = head_of_num();
        if head.t < 0 {
            status = ST_ZERO;
        } else {
            if DTYPE <= 1u {
                // The top 64 bits of the magnitude and whether any bit under
                // them is: all that rounding reads. W's top bit is at
                // 128 + tb, so they are W >> (tb + 65).
                let tb = bit_len(head.top) - 1u;
                let k = head.t * 32 + i32(tb) - 63;
                let x = vec2<u32>(head_bits(head, tb + 65u), head_bits(head, tb + 97u));
                let below = head.under || head.low.x != 0u || head.low.y != 0u
                    || low_bits_set(head.low.z, tb + 1u);
                sum = rounded_bits(x, grid_exponent() + k, below, negative);
            } else {
                // int64: |sum| <= 2^63 when negative, < 2^63 otherwise.
                let wide = head.t >= 2;
                let m = vec2<u32>(num[0], num[1]);
                let top = (m.y >> 31u) != 0u;
                let at_limit = m.y == 0x80000000u && m.x == 0u;
                if wide || (top && !(negative && at_limit)) {
                    status = ST_OVERFLOW;
                } else if negative {
                    sum = vec2<u32>(0u - m.x, ~m.y + select(0u, 1u, m.x == 0u));
                } else {
                    sum = m;
                }
            }
            let c = vec2<u32>(acc[at + A_COUNT], acc[at + A_COUNT + 1u]);
            if WANT_MEAN && any(c != vec2<u32>(0u)) {
                mean = mean_bits(c, grid_exponent(), head, negative);
            }
        }
    }
    rec[out + 9u] = status;
    rec[out + 10u] = sum.x;
    rec[out + 11u] = sum.y;
    rec[out + 12u] = mean.x;
    rec[out + 13u] = mean.y;
}
