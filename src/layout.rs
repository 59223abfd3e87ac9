//! The host's side of every layout it shares with the WGSL, for
//! tests/wgsl_layout.rs, which checks it against the shaders with naga:
//! the `#[repr(C)]` structs written into uniform and storage buffers (size,
//! and each field's offset and size), the bind group layouts (in
//! [`crate::kernels`]) and the constants the host reads partials and
//! accumulators with. Not part of the public API.

use crate::dtype::Dtype;
use crate::kernels::{BLOCK, GROUP, KernelShape};
use crate::keyed::accumulators::AccumulatorLayout;
use crate::keyed::kernels::{COMPACT_WORDS, Local, group_workgroup_size, rows_per_invocation};
use crate::keyed::limbs::Limbs;
use crate::state::{FLAG_NAN, FLAG_NEG_INF, FLAG_NONNEG, FLAG_POS_INF, PartialLayout};

/// One field of a host struct, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostField {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// A `#[repr(C)]` struct the host writes for a WGSL struct.
#[derive(Clone, Debug)]
pub struct HostStruct {
    /// The WGSL struct's name.
    pub wgsl: &'static str,
    pub size: usize,
    pub fields: Vec<HostField>,
}

/// The [`HostStruct`] of `$t` (a `Zeroable` struct), named `$wgsl` in the
/// shader, with the listed fields.
macro_rules! host_struct {
    ($wgsl:literal, $t:ty { $($f:ident),* $(,)? }) => {{
        let zero = <$t as bytemuck::Zeroable>::zeroed();
        $crate::layout::HostStruct {
            wgsl: $wgsl,
            size: std::mem::size_of::<$t>(),
            fields: vec![$($crate::layout::HostField {
                name: stringify!($f),
                offset: std::mem::offset_of!($t, $f),
                size: std::mem::size_of_val(&zero.$f),
            }),*],
        }
    }};
}
pub(crate) use host_struct;

/// The structs written for exact.wgsl: the element and partial passes'
/// `Params` uniform and the segment table's `Segment` entries.
pub fn exact_structs() -> Vec<HostStruct> {
    vec![crate::exec::params_layout(), crate::plan::segment_layout()]
}

/// The struct written for group.wgsl: its `Params` uniform.
pub fn group_structs() -> Vec<HostStruct> {
    vec![crate::keyed::run::group_params_layout()]
}

/// The flag bits of partials and accumulators (`FLAG_*` in both shaders).
fn flags() -> [(&'static str, u64); 4] {
    [
        ("FLAG_NAN", FLAG_NAN as u64),
        ("FLAG_POS_INF", FLAG_POS_INF as u64),
        ("FLAG_NEG_INF", FLAG_NEG_INF as u64),
        ("FLAG_NONNEG", FLAG_NONNEG as u64),
    ]
}

/// Every constant of exact.wgsl, composed for `dtype` and `shape`, that
/// the host relies on, with the host's value.
pub fn exact_constants(dtype: Dtype, shape: KernelShape) -> Vec<(&'static str, u64)> {
    let p = PartialLayout::of(dtype);
    let mut c = vec![
        ("WG", shape.workgroup_size() as u64),
        ("BLOCK", BLOCK),
        ("GROUP", GROUP),
        ("LIMBS", dtype.limbs() as u64),
        ("WPE", dtype.words()),
        ("PARTIAL_WORDS", dtype.partial_words() as u64),
        ("P_COUNT", p.count as u64),
        ("P_FLAGS", p.flags as u64),
        ("P_KEY", p.key as u64),
    ];
    c.extend(flags());
    c
}

/// Every constant of group.wgsl, composed for `dtype`, `limbs`, `shape`
/// and `local`, that the host relies on, with the host's value.
pub fn group_constants(
    dtype: Dtype,
    limbs: Limbs,
    shape: KernelShape,
    local: Local,
) -> Vec<(&'static str, u64)> {
    let a = AccumulatorLayout::of(limbs);
    let mut c = vec![
        ("WG", group_workgroup_size(shape, local) as u64),
        ("PW", COMPACT_WORDS as u64),
        ("RUN", rows_per_invocation(shape) as u64),
        ("LIMBS", limbs.len as u64),
        ("STRIDE", limbs.stride as u64),
        ("WPE", dtype.words()),
        ("DTYPE", dtype.code() as u64),
        ("A_COUNT", a.count as u64),
        ("A_NANS", a.nans as u64),
        ("A_FLAGS", a.flags as u64),
        ("A_MAX", a.max as u64),
        ("A_MIN", a.min as u64),
    ];
    c.extend(flags());
    c
}

/// Words of one GPU partial of `dtype`, as the host sizes and reads them.
pub fn partial_words(dtype: Dtype) -> usize {
    dtype.partial_words()
}
