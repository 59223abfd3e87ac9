// exact_int.wgsl: int32, uint32 and int64 values for exact.wgsl (INT_KIND
// 0, 1, 2, set in the header src/kernels.rs writes).
//
// What it computes
//   `fold_group` folds one group of GROUP_WORDS words (8 vec4s: 32 int32 or
//   uint32 values, or 16 int64 values as (lo, hi, lo, hi)) into an
//   invocation's running state:
//   - sum: the two's complement words themselves, added into 32-bit lanes
//     with the carries out of each word counted, and the negative values
//     counted (a negative word pattern stands for itself minus 2^32, or
//     2^64 for int64); flushed once into the workgroup's accumulator.
//   - max/min: the best order key per lane (the sign bit flipped for
//     signed types).
//   Integers have no NaN and no infinities; padding past a unit's end is 0.
//
// How it is dispatched
//   Not on its own: composed between exact.wgsl and exact_entry.wgsl.

struct Acc {
    a0: vec4<u32>,      // sum of (low) words
    k0: vec4<u32>,      // carries out of a0
    a1: vec4<u32>,      // int64: sum of high words
    k1: vec4<u32>,      // int64: carries out of a1
    negs: vec4<u32>,    // negative values added
    best_lo: vec4<u32>, // max/min: best op key per lane (int64: lanes x, z)
    best_hi: vec4<u32>,
}

fn acc_new() -> Acc {
    let z = vec4<u32>(0u);
    return Acc(z, z, z, z, z, z, z);
}

// Carries out of `sum = a + x` (lane-wise).
fn carries(sum: vec4<u32>, x: vec4<u32>) -> vec4<u32> {
    return select(vec4<u32>(0u), vec4<u32>(1u), sum < x);
}

fn fold_vec4(acc: ptr<function, Acc>, raw: vec4<u32>, word: u32, len: u32) {
    let valid = (vec4<u32>(word) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(len);
    let v = select(vec4<u32>(0u), raw, valid);
    if INT_KIND == 2u {
        // Lanes x, z hold low words, y, w high words.
        if OP == OP_SUM {
            let lo = vec4<u32>(v.x, 0u, v.z, 0u);
            let hi = vec4<u32>(v.y, 0u, v.w, 0u);
            let a0 = (*acc).a0 + lo;
            (*acc).a0 = a0;
            (*acc).k0 = (*acc).k0 + carries(a0, lo);
            let a1 = (*acc).a1 + hi;
            (*acc).a1 = a1;
            (*acc).k1 = (*acc).k1 + carries(a1, hi);
            (*acc).negs = (*acc).negs + (hi >> vec4<u32>(31u));
        } else {
            let khi0 = vec4<u32>(v.y, 0u, v.w, 0u) ^ vec4<u32>(0x80000000u, 0u, 0x80000000u, 0u);
            let klo0 = vec4<u32>(v.x, 0u, v.z, 0u);
            let ok = vec4<bool>(valid.x, false, valid.z, false);
            let khi = select(vec4<u32>(0u), select(khi0, ~khi0, OP == 2u), ok);
            let klo = select(vec4<u32>(0u), select(klo0, ~klo0, OP == 2u), ok);
            let wins = (khi > (*acc).best_hi) | ((khi == (*acc).best_hi) & (klo > (*acc).best_lo));
            (*acc).best_hi = select((*acc).best_hi, khi, wins);
            (*acc).best_lo = select((*acc).best_lo, klo, wins);
        }
        return;
    }
    if OP == OP_SUM {
        let a0 = (*acc).a0 + v;
        (*acc).a0 = a0;
        (*acc).k0 = (*acc).k0 + carries(a0, v);
        if INT_KIND == 0u {
            (*acc).negs = (*acc).negs + (v >> vec4<u32>(31u));
        }
    } else {
        let key = select(v, v ^ vec4<u32>(0x80000000u), INT_KIND == 0u);
        let k = select(key, ~key, OP == 2u);
        (*acc).best_hi = max((*acc).best_hi, select(vec4<u32>(0u), k, valid));
    }
}

fn fold_group(acc: ptr<function, Acc>, range: UnitRange, q0: u32, fast: bool) {
    for (var k = 0u; k < 8u; k++) {
        let w = 4u * (q0 + k * WG);
        fold_vec4(acc, vec4_at(range, w, fast), w, range.len);
    }
}

// Sum over lanes of a0 + (k0 + a1) 2^32 + k1 2^64 - negs 2^32 (int32) or
// - negs 2^64 (int64).
fn finish_thread(acc: Acc) {
    if OP != OP_SUM {
        return;
    }
    let a = acc;
    var w = vec4<u32>(a.a0.x, a.a1.x, a.k1.x, 0u);
    w = add128(w, vec4<u32>(a.a0.y, a.a1.y, a.k1.y, 0u));
    w = add128(w, vec4<u32>(a.a0.z, a.a1.z, a.k1.z, 0u));
    w = add128(w, vec4<u32>(a.a0.w, a.a1.w, a.k1.w, 0u));
    let k0 = a.k0.x + a.k0.y + a.k0.z + a.k0.w;
    w = add128(w, vec4<u32>(0u, k0, 0u, 0u));
    let negs = a.negs.x + a.negs.y + a.negs.z + a.negs.w;
    let ones = select(0u, 0xffffffffu, negs != 0u);
    if INT_KIND == 2u {
        w = add128(w, vec4<u32>(0u, 0u, 0u - negs, ones));
    } else {
        w = add128(w, vec4<u32>(0u, 0u - negs, ones, ones));
    }
    flush_signed(w, 0u);
}

fn thread_key(acc: Acc) -> vec2<u32> {
    let b = acc;
    let x = key_max(vec2<u32>(b.best_lo.x, b.best_hi.x), vec2<u32>(b.best_lo.y, b.best_hi.y));
    let y = key_max(vec2<u32>(b.best_lo.z, b.best_hi.z), vec2<u32>(b.best_lo.w, b.best_hi.w));
    return key_max(x, y);
}
