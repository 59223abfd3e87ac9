// exact_float.wgsl: the band logic shared by float32 and float64 (composed
// after exact_f32.wgsl or exact_f64.wgsl, which define `Band`, `Acc`,
// `band_add`, `band_flush`, `top_under`, `top_of`, `clean` and
// `all_neg_bits` for their layout).
//
// What it computes
//   `fold_group` folds one group of GROUP_WORDS words into an invocation's
//   running state: `clean` takes NaN and infinities out; then, for the sum,
//   a group whose largest position lies at or above the band's top flushes
//   the band and anchors a new one BAND_BELOW binades under that position,
//   the values are added into the band, and values under the band go
//   through further bands (`fold_residuals`), flushed at once.
//   `finish_thread` flushes the last band and hands the flags to the
//   workgroup.
//
// How it is dispatched
//   Not on its own: composed between a float dtype file and exact_entry.wgsl.

// The values of a group that lie under position `first_hi`, band after
// band down to the bottom of the grid, each band flushed at once.
fn fold_residuals(v0: vec4<u32>, v1: vec4<u32>, v2: vec4<u32>, v3: vec4<u32>, v4: vec4<u32>, v5: vec4<u32>, v6: vec4<u32>, v7: vec4<u32>, first_hi: u32) {
    var hi = first_hi;
    loop {
        let top = max(max(max(top_under(v0, hi), top_under(v1, hi)), max(top_under(v2, hi), top_under(v3, hi))), max(max(top_under(v4, hi), top_under(v5, hi)), max(top_under(v6, hi), top_under(v7, hi))));
        if top == 0u {
            break;
        }
        let base = max(top, BAND_BELOW + 1u) - BAND_BELOW;
        let lim = min(32u, hi - base);
        var band = band_new();
        var dead = band_add(&band, v0, base, lim);
        dead = dead | band_add(&band, v1, base, lim);
        dead = dead | band_add(&band, v2, base, lim);
        dead = dead | band_add(&band, v3, base, lim);
        dead = dead | band_add(&band, v4, base, lim);
        dead = dead | band_add(&band, v5, base, lim);
        dead = dead | band_add(&band, v6, base, lim);
        dead = dead | band_add(&band, v7, base, lim);
        band_flush(band, base);
        if base == 1u {
            break;
        }
        hi = base;
    }
}

// Folds the group whose first vec4 is `q0` (its 8 vec4s WG apart).
fn fold_group(acc: ptr<function, Acc>, range: UnitRange, q0: u32, fast: bool) {
    let v0 = clean(acc, vec4_at(range, 4u * q0, fast), 4u * q0, range.len);
    let v1 = clean(acc, vec4_at(range, 4u * (q0 + WG), fast), 4u * (q0 + WG), range.len);
    let v2 = clean(acc, vec4_at(range, 4u * (q0 + 2u * WG), fast), 4u * (q0 + 2u * WG), range.len);
    let v3 = clean(acc, vec4_at(range, 4u * (q0 + 3u * WG), fast), 4u * (q0 + 3u * WG), range.len);
    let v4 = clean(acc, vec4_at(range, 4u * (q0 + 4u * WG), fast), 4u * (q0 + 4u * WG), range.len);
    let v5 = clean(acc, vec4_at(range, 4u * (q0 + 5u * WG), fast), 4u * (q0 + 5u * WG), range.len);
    let v6 = clean(acc, vec4_at(range, 4u * (q0 + 6u * WG), fast), 4u * (q0 + 6u * WG), range.len);
    let v7 = clean(acc, vec4_at(range, 4u * (q0 + 7u * WG), fast), 4u * (q0 + 7u * WG), range.len);
    if OP != OP_SUM {
        return;
    }
    let top = max(max(max(top_of(v0), top_of(v1)), max(top_of(v2), top_of(v3))), max(max(top_of(v4), top_of(v5)), max(top_of(v6), top_of(v7))));
    if (*acc).base == 0u || top >= (*acc).base + 32u {
        if (*acc).base != 0u {
            band_flush((*acc).band, (*acc).base);
        }
        (*acc).base = max(top, BAND_BELOW + 1u) - BAND_BELOW;
        (*acc).band = band_new();
    }
    let base = (*acc).base;
    // A local copy: naga's SPIR-V writer cannot pass a pointer to a field
    // behind a pointer argument.
    var band = (*acc).band;
    var r = band_add(&band, v0, base, 32u);
    r = r | band_add(&band, v1, base, 32u);
    r = r | band_add(&band, v2, base, 32u);
    r = r | band_add(&band, v3, base, 32u);
    r = r | band_add(&band, v4, base, 32u);
    r = r | band_add(&band, v5, base, 32u);
    r = r | band_add(&band, v6, base, 32u);
    r = r | band_add(&band, v7, base, 32u);
    (*acc).band = band;
    if any(r) {
        fold_residuals(v0, v1, v2, v3, v4, v5, v6, v7, base);
    }
}

// Hands the invocation's state to the workgroup (after its last group).
fn finish_thread(acc: Acc) {
    var flags = acc.flags;
    if OP == OP_SUM {
        if acc.base != 0u {
            band_flush(acc.band, acc.base);
        }
        flags |= select(FLAG_NONNEG, 0u, (all_neg_bits(acc) >> 31u) != 0u);
    }
    atomicOr(&wg_flags, flags);
    if acc.nans != 0u {
        atomicAdd(&wg_nans, acc.nans);
    }
}
