// tree_subgroup.wgsl: the subgroup tree and entry points (Features::SUBGROUP).
//
// Appended to reduce.wgsl and wide.wgsl for the wide kernels with the
// subgroup tree (KernelShape::Subgroup: GPUs with Features::SUBGROUP; naga
// 30 enables the subgroup builtins through that feature, without a
// directive). It computes exactly the same tree as tree_workgroup.wgsl, so
// both variants give the same bits: strides 128 .. W go through workgroup
// memory, and strides W/2 .. 1 (inside subgroup 0) through
// subgroupShuffleDown, because for a subgroup of width W laid out as
// invocations [0, W) combining lane t with lane t + s is the same step as
// the workgroup tree's stride s. Works for any power-of-two width up to 256
// (4 .. 128 in practice). If the subgroup width is not a power of two, or the
// lanes are not laid out as t % W, the whole workgroup falls back to the
// workgroup-memory tree (checked at run time, uniformly).
// Entry points: reduce_elements and reduce_partials, as in tree_workgroup.wgsl.

var<workgroup> layout_bad: atomic<u32>;
var<workgroup> sg_width: u32;

fn shuffle_down(p: Partial, delta: u32) -> Partial {
    return Partial(
        subgroupShuffleDown(p.a, delta),
        subgroupShuffleDown(p.b, delta),
        subgroupShuffleDown(p.count_lo, delta),
        subgroupShuffleDown(p.hi_flags, delta),
        subgroupShuffleDown(p.big_a, delta),
        subgroupShuffleDown(p.big_b, delta),
        0u,
        0u,
    );
}

fn tree_reduce(lane: Lane, p: Partial) -> Partial {
    let t = lane.t;
    let w_local = lane.sg_size;
    let bad_width = w_local == 0u || (w_local & (w_local - 1u)) != 0u || w_local > WG;
    if bad_width || lane.sg_id != t % max(w_local, 1u) {
        atomicStore(&layout_bad, 1u);
    }
    if t == 0u {
        sg_width = w_local;
    }
    scratch[t] = p;
    let bad = workgroupUniformLoad(&layout_bad) != 0u;
    let w = workgroupUniformLoad(&sg_width);
    let stop = select(w, 1u, bad);
    for (var stride = WG / 2u; stride >= stop && stride > 0u; stride = stride / 2u) {
        if t < stride {
            scratch[t] = combine(scratch[t], scratch[t + stride]);
        }
        workgroupBarrier();
    }
    if bad || w <= 1u {
        return scratch[0];
    }
    var v = scratch[t];
    for (var s = w / 2u; s > 0u; s = s / 2u) {
        let other = shuffle_down(v, s);
        if lane.sg_id < s {
            v = combine(v, other);
        }
    }
    return v;
}

@compute @workgroup_size(256)
fn reduce_elements(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_id: u32,
) {
    elements_pass(Lane(t, sg_size, sg_id), wid.x + wid.y * nwg.x);
}

@compute @workgroup_size(256)
fn reduce_partials(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_id: u32,
) {
    partials_pass(Lane(t, sg_size, sg_id), wid.x + wid.y * nwg.x);
}
