// tree_workgroup.wgsl: the portable workgroup tree and entry points.
//
// Appended to reduce.wgsl and wide.wgsl for the wide kernels with the
// workgroup tree (KernelShape::Workgroup: GPUs without Features::SUBGROUP,
// or when asked for). `tree_reduce` combines the 256 per-invocation
// partials in workgroup memory with sequential addressing: at stride s
// (128, 64, ..., 1) invocation t < s combines partial t with partial t + s.
// The result is valid in invocation 0.
// Entry points: reduce_elements (element pass) and reduce_partials (partial
// pass), each @workgroup_size(256) on a 2-D grid (see reduce.wgsl).

fn tree_reduce(lane: Lane, p: Partial) -> Partial {
    let t = lane.t;
    scratch[t] = p;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if t < stride {
            scratch[t] = combine(scratch[t], scratch[t + stride]);
        }
        workgroupBarrier();
    }
    return scratch[0];
}

@compute @workgroup_size(256)
fn reduce_elements(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    elements_pass(Lane(t, 0u, 0u), wid.x + wid.y * nwg.x);
}

@compute @workgroup_size(256)
fn reduce_partials(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    partials_pass(Lane(t, 0u, 0u), wid.x + wid.y * nwg.x);
}
