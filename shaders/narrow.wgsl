// narrow.wgsl: the narrow kernels, for CPU (software) adapters such as
// lavapipe.
//
// What it computes
//   Exactly what the wide kernels compute (same bits): per unit, the 256
//   per-invocation partials of reduce.wgsl combined by the
//   sequential-addressing tree (stride 128, 64, ..., 1). Here invocation t
//   (0..7) computes the 32 partials p = t + 8j, j = 0..31, which are the
//   leaves of the tree's strides 128 .. 8 below node t. It visits them in
//   bit-reversed j order, where that part of the tree pairs neighbours, so
//   the subtrees close like a binary counter (pending left halves wait in
//   `pending`), 31 combines in all. Invocation 0 then combines the 8 nodes
//   with strides 4, 2, 1 and writes the unit's partial.
//
//   Why: a CPU rasteriser runs a workgroup as SIMD groups of 4-16 lanes and
//   executes every branch of every group, masked. The wide tree's 8 levels
//   then cost 8 combines in each group (32 groups with llvmpipe's 8 lanes);
//   here the tree is 38 combines in one or two groups, and there is one
//   barrier.
//
// How it is dispatched
//   @workgroup_size(8), one workgroup per unit, on the same 2-D grid as the
//   wide kernels (reduce.wgsl), so the host side is the same. Composed after
//   reduce.wgsl. Entry points: reduce_elements, reduce_partials.

const NARROW: u32 = 8u;
const LEAVES: u32 = 32u; // WG / NARROW

var<workgroup> nodes: array<Partial, NARROW>;

// Per-invocation partial number of leaf m of invocation t: j = reverse5(m).
fn leaf_partial(t: u32, m: u32) -> u32 {
    return t + NARROW * (reverseBits(m) >> 27u);
}

// Adds leaf m (0..31, in order) to invocation t's subtree, the tree's
// strides 128 .. 8 over the partials t + 8j. In bit-reversed j order each
// of those strides pairs the neighbours m, m + 1 of an aligned run (leaves
// or closed subtrees), the left one (lower j) first as in the wide tree, so
// m's trailing one bits say which pending left halves close. After leaf 31
// the whole subtree is in pending[5].
fn add_leaf(pending: ptr<function, array<Partial, 6>>, m: u32, leaf: Partial) {
    var x = leaf;
    var d = 0u;
    while ((m >> d) & 1u) == 1u {
        x = combine((*pending)[d], x);
        d++;
    }
    (*pending)[d] = x;
}

// Combines the 8 invocations' subtrees (strides 4, 2, 1) and writes the
// unit's partial. Called by all 8 invocations (it holds a barrier).
fn finish_unit(t: u32, unit: u32, subtree: Partial) {
    nodes[t] = subtree;
    workgroupBarrier();
    if t == 0u {
        let a = combine(combine(nodes[0], nodes[4]), combine(nodes[2], nodes[6]));
        let b = combine(combine(nodes[1], nodes[5]), combine(nodes[3], nodes[7]));
        out_partials[unit - params.out_base] = combine(a, b);
    }
}

@compute @workgroup_size(8)
fn reduce_elements(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let unit_linear = wid.x + wid.y * nwg.x;
    if unit_linear >= params.unit_count {
        return;
    }
    let unit = params.unit_base + unit_linear;
    let range = unit_range(unit, BLOCK);
    let full = is_full_block(range);
    var pending: array<Partial, 6>;
    // Two loops, one of them empty, rather than a branch in one: a CPU
    // rasteriser would run both sides of the branch for every leaf, but
    // leaves an empty loop after one masked pass.
    for (var m = 0u; m < select(0u, LEAVES, full); m++) {
        add_leaf(&pending, m, fold_full_block(range, leaf_partial(t, m)));
    }
    for (var m = 0u; m < select(LEAVES, 0u, full); m++) {
        add_leaf(&pending, m, fold_short_block(range, leaf_partial(t, m)));
    }
    finish_unit(t, unit, pending[5]);
}

@compute @workgroup_size(8)
fn reduce_partials(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let unit_linear = wid.x + wid.y * nwg.x;
    if unit_linear >= params.unit_count {
        return;
    }
    let unit = params.unit_base + unit_linear;
    let range = unit_range(unit, GROUP);
    var pending: array<Partial, 6>;
    for (var m = 0u; m < LEAVES; m++) {
        add_leaf(&pending, m, fold_partials(range, leaf_partial(t, m)));
    }
    finish_unit(t, unit, pending[5]);
}
