// spread.wgsl: the grid positions of a device-resident float column's
// nonzero finite values, for sizing keyed groups' accumulators
// (src/keyed/limbs.rs): the lowest position and one past the highest
// (each value's biased exponent less one, 0 for subnormals; group.wgsl's
// `Value::pos`). NaN, infinities and zeros are left out.
//
// How it is dispatched
//   @workgroup_size(WG), once per buffer of the column: invocation i of
//   workgroup w (w = workgroup_id.x + workgroup_id.y * num_workgroups.x)
//   takes values w * WG + i, then every WG * W-th value after it (W: the
//   grid's workgroups), up to `count`. The host launches enough workgroups
//   that no invocation loops more than a few dozen times. Each workgroup
//   folds its invocations' extremes in workgroup memory and adds them to
//   out[0] (atomicMin) and out[1] (atomicMax), which the host sets to
//   0xffffffff and 0 first. Composed after a header (src/keyed/spread.rs)
//   defining WG and DTYPE (0 float32, 1 float64).

struct SpreadParams {
    count: u32, // values in this buffer
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> sparams: SpreadParams;
@group(0) @binding(1) var<storage, read> values: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<atomic<u32>, 2>;

var<workgroup> lowest: atomic<u32>;
var<workgroup> past_highest: atomic<u32>;

// Value i's position plus one, or 0 where it is not a nonzero finite value.
fn position_plus_one(i: u32) -> u32 {
    if DTYPE == 0u {
        let b = values[i];
        let e = (b >> 23u) & 0xffu;
        let counted = e != 0xffu && (b & 0x7fffffffu) != 0u;
        return select(0u, max(e, 1u), counted);
    }
    let lo = values[2u * i];
    let hi = values[2u * i + 1u];
    let e = (hi >> 20u) & 0x7ffu;
    let counted = e != 0x7ffu && ((hi & 0x7fffffffu) | lo) != 0u;
    return select(0u, max(e, 1u), counted);
}

@compute @workgroup_size(WG)
fn spread(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if t == 0u {
        atomicStore(&lowest, 0xffffffffu);
        atomicStore(&past_highest, 0u);
    }
    workgroupBarrier();
    var lo = 0xffffffffu;
    var top = 0u;
    let stride = nwg.x * nwg.y * WG;
    for (var i = (wid.x + wid.y * nwg.x) * WG + t; i < sparams.count; i += stride) {
        let p = position_plus_one(i);
        lo = min(lo, select(0xffffffffu, p - 1u, p != 0u));
        top = max(top, p);
    }
    atomicMin(&lowest, lo);
    atomicMax(&past_highest, top);
    workgroupBarrier();
    if t == 0u {
        atomicMin(&out[0], atomicLoad(&lowest));
        atomicMax(&out[1], atomicLoad(&past_highest));
    }
}
