// wide.wgsl: the wide kernels' passes, for GPUs.
//
// What it computes
//   One output partial per unit (see reduce.wgsl): invocation t of the
//   256-wide workgroup folds per-invocation partial t (fold_full_block,
//   fold_short_block or fold_partials), then `tree_reduce` combines the
//   256 with the sequential-addressing tree (stride 128, 64, ..., 1) and
//   invocation 0 writes the result.
//
// How it is dispatched
//   @workgroup_size(256), one workgroup per unit on a 2-D grid, as described
//   in reduce.wgsl. This file is composed after reduce.wgsl and before one of
//   tree_workgroup.wgsl / tree_subgroup.wgsl, which define `tree_reduce` and
//   the entry points.

struct Lane {
    t: u32,       // local_invocation_index
    sg_size: u32, // subgroup size (0 in the workgroup-memory variant)
    sg_id: u32,   // subgroup_invocation_id
}

var<workgroup> scratch: array<Partial, WG>;

// Element pass: one unit = one block of up to BLOCK floats.
fn elements_pass(lane: Lane, unit_linear: u32) {
    if unit_linear >= params.unit_count {
        return;
    }
    let unit = params.unit_base + unit_linear;
    let range = unit_range(unit, BLOCK);
    var p: Partial;
    if is_full_block(range) {
        p = fold_full_block(range, lane.t);
    } else {
        p = fold_short_block(range, lane.t);
    }
    let r = tree_reduce(lane, p);
    if lane.t == 0u {
        out_partials[unit - params.out_base] = r;
    }
}

// Partial pass: one unit = one group of up to GROUP partials.
fn partials_pass(lane: Lane, unit_linear: u32) {
    if unit_linear >= params.unit_count {
        return;
    }
    let unit = params.unit_base + unit_linear;
    let r = tree_reduce(lane, fold_partials(unit_range(unit, GROUP), lane.t));
    if lane.t == 0u {
        out_partials[unit - params.out_base] = r;
    }
}
