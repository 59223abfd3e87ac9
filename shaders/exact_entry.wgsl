// exact_entry.wgsl: the entry points of the exact reductions.
//
// What it computes
//   reduce_elements: one partial per unit of up to BLOCK input words.
//     Invocation t folds the groups of 8 vec4s whose first vec4 is
//     t + i * 8 * WG (i = 0, 1, ...), each vec4 of a group WG apart, so
//     neighbouring invocations read neighbouring memory; then it hands its
//     state to the workgroup's accumulator and invocation 0 writes the
//     partial (layout in exact.wgsl).
//   reduce_partials: one partial per unit of up to GROUP partials. For the
//     sum, invocation t adds limb t (t + WG, ...) of every partial into
//     64-bit limb sums, and invocation 0 carries them up; counts, flags and
//     keys are combined across invocations with atomics.
//
// How it is dispatched
//   @workgroup_size(WG) on the 2-D grid described in exact.wgsl: workgroup
//   w takes units w, w + grid, w + 2 grid, ... (grid = the workgroups
//   dispatched), so a grid of one workgroup per unit runs each unit once,
//   and a smaller grid (EngineOptions::persistent_workgroups) keeps its
//   workgroups resident over several units. A unit's partial does not
//   depend on which workgroup computes it. Composed last, after exact.wgsl
//   and a dtype file.

@compute @workgroup_size(WG)
fn reduce_elements(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let grid = nwg.x * nwg.y;
    var u = wid.x + wid.y * nwg.x;
    loop {
        if u >= params.unit_count {
            break;
        }
        element_unit(t, params.unit_base + u);
        // The partial is written before the next unit clears the
        // workgroup's accumulator.
        workgroupBarrier();
        if params.unit_count - u <= grid {
            break;
        }
        u += grid;
    }
}

// One unit of the element pass (see reduce_elements).
fn element_unit(t: u32, unit: u32) {
    clear_workgroup(t);
    let range = unit_range(unit, BLOCK);
    let fast = range.len == BLOCK && (range.start & 3u) == 0u;
    var acc = acc_new();
    // Groups wholly past the unit's end add nothing: stop before them (a
    // bound uniform over the workgroup).
    let steps = (range.len + 4u * 8u * WG - 1u) / (4u * 8u * WG);
    for (var i = 0u; i < steps; i++) {
        fold_group(&acc, range, t + i * 8u * WG, fast);
    }
    finish_thread(acc);
    if OP != OP_SUM {
        key_reduce(thread_key(acc));
    }
    workgroupBarrier();
    if t == 0u {
        write_partial(unit, range.len / WPE - atomicLoad(&wg_nans), 0u);
    }
}

@compute @workgroup_size(WG)
fn reduce_partials(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let grid = nwg.x * nwg.y;
    var u = wid.x + wid.y * nwg.x;
    loop {
        if u >= params.unit_count {
            break;
        }
        partial_unit(t, params.unit_base + u);
        workgroupBarrier();
        if params.unit_count - u <= grid {
            break;
        }
        u += grid;
    }
}

// One unit of the partial pass (see reduce_partials).
fn partial_unit(t: u32, unit: u32) {
    clear_workgroup(t);
    let range = unit_range(unit, GROUP);
    if OP == OP_SUM {
        for (var l = t; l < LIMBS; l += WG) {
            var lo = 0u;
            var hi = 0u;
            for (var i = 0u; i < range.len; i++) {
                let x = in_partials[(range.start + i) * PARTIAL_WORDS + l];
                lo += x;
                hi += carry(lo, x);
            }
            wg_limb_lo[l] = lo;
            wg_limb_hi[l] = hi;
        }
    }
    var c_lo = 0u;
    var c_hi = 0u;
    var flags = 0u;
    var key = vec2<u32>(0u);
    for (var i = t; i < range.len; i += WG) {
        let b = (range.start + i) * PARTIAL_WORDS;
        let x = in_partials[b + P_COUNT];
        c_lo += x;
        c_hi += in_partials[b + P_COUNT + 1u] + carry(c_lo, x);
        flags |= in_partials[b + P_FLAGS];
        key = key_max(key, vec2<u32>(in_partials[b + P_KEY], in_partials[b + P_KEY + 1u]));
    }
    let old = atomicAdd(&wg_count_lo, c_lo);
    atomicAdd(&wg_count_hi, c_hi + carry(old + c_lo, c_lo));
    atomicOr(&wg_flags, flags);
    if OP != OP_SUM {
        key_reduce(key);
    }
    workgroupBarrier();
    if t == 0u {
        let base = (unit - params.out_base) * PARTIAL_WORDS;
        var c = 0u;
        for (var l = 0u; l < LIMBS; l++) {
            var s = 0u;
            if OP == OP_SUM {
                s = wg_limb_lo[l] + c;
                c = wg_limb_hi[l] + carry(s, c);
            }
            out_partials[base + l] = s;
        }
        out_partials[base + P_COUNT] = atomicLoad(&wg_count_lo);
        out_partials[base + P_COUNT + 1u] = atomicLoad(&wg_count_hi);
        out_partials[base + P_FLAGS] = atomicLoad(&wg_flags);
        out_partials[base + P_KEY] = atomicLoad(&wg_key_lo);
        out_partials[base + P_KEY + 1u] = atomicLoad(&wg_key_hi);
    }
}
