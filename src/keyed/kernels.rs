//! The group kernel's pipelines (shaders/group.wgsl): one shader module per
//! dtype, built on first use, and one pipeline per combination of group
//! mode, wanted accumulators and key phase, built on first use and reused.

use crate::sync::cached;
use std::collections::HashMap;
use std::sync::Mutex;

use crate::dtype::Dtype;
use crate::kernels::{BindingKind, KernelShape, kernel_layouts};
use crate::options::KernelBuild;

use super::limbs::{Limbs, magnitude_bits};

pub const GROUP_WGSL: &str = include_str!("../../shaders/group.wgsl");

/// Bytes of the group kernel's `Params` uniform.
pub const GROUP_PARAMS_BYTES: u64 = 48;

/// The group kernel's bindings (group.wgsl): params, keys, values,
/// accumulators, partition starts.
pub const GROUP_BINDINGS: [(u32, BindingKind); 5] = [
    (0, BindingKind::Uniform),
    (1, BindingKind::ReadOnly),
    (2, BindingKind::ReadOnly),
    (3, BindingKind::ReadWrite),
    (4, BindingKind::ReadOnly),
];

/// Where a row's group comes from (`MODE` in group.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupMode {
    /// One 32-bit key word per row (int32, uint32 keys, or dictionary ids).
    Keys32 = 0,
    /// Two words per row (int64 keys).
    Keys64 = 1,
    /// Equal-size partitions.
    EqualSize = 2,
    /// Partitions given by offsets.
    Offsets = 3,
}

/// Where a pass of keyed groups accumulates first (group.wgsl's `PRIVATE`
/// and `COMPACT`): all give the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Local {
    /// Straight into the global accumulators.
    Global,
    /// Each workgroup in workgroup memory, in the global layout (phase 0,
    /// up to [`private_groups`]).
    Private,
    /// Each workgroup in workgroup memory, in [`COMPACT_WORDS`] words a
    /// group (32-bit values added row by row, up to [`compact_groups`]).
    Compact,
}

impl Local {
    /// Every variant.
    pub const ALL: [Local; 3] = [Local::Global, Local::Private, Local::Compact];
}

/// A forced way for keyed passes to take rows and accumulate (each
/// `None` leaves the engine's choice): for measuring the ways against one
/// another, as `GPULANES_GROUP` sets it. Every way gives the same bits. A
/// forced accumulation applies where it can hold the pass (compact: 32-bit
/// values added row by row and up to [`compact_groups`] groups; private:
/// up to [`private_groups`]; neither for the second phase of 64-bit keys
/// or for partitions); elsewhere the engine chooses. Naming any way turns
/// off the engine's own sorting of host-held rows unless `sort` is named.
///
/// ```
/// use gpulanes::kernels::{GroupStrategy, Local};
/// let forced = GroupStrategy::default().with_direct(true).with_local(Local::Compact);
/// assert_eq!(GroupStrategy::parse("direct,compact"), Some(forced));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStrategy {
    /// `Some(true)`: rows one by one; `Some(false)`: run by run.
    pub direct: Option<bool>,
    /// Where keyed passes accumulate first.
    pub local: Option<Local>,
    /// `Some(true)`: host-held keyed rows are put in group order on the
    /// host before the pass (up to [`MAX_SORTED_ROWS`](crate::MAX_SORTED_ROWS)
    /// rows); `Some(false)`: never.
    pub sort: Option<bool>,
}

impl GroupStrategy {
    /// Rows one by one (`true`) or run by run (`false`).
    #[must_use]
    pub fn with_direct(mut self, direct: bool) -> Self {
        self.direct = Some(direct);
        self
    }

    /// Accumulation first in `local`.
    #[must_use]
    pub fn with_local(mut self, local: Local) -> Self {
        self.local = Some(local);
        self
    }

    /// Host-held rows put in group order first (`true`), or never
    /// (`false`).
    #[must_use]
    pub fn with_sort(mut self, sort: bool) -> Self {
        self.sort = Some(sort);
        self
    }

    /// What [`GroupStrategy::parse`] accepts.
    pub const NAMES: &'static str =
        "a comma-separated list of runs or direct, global, private or compact, and sort or no-sort";

    /// Parses a comma-separated list of `runs` or `direct`, `global`,
    /// `private` or `compact`, and `sort` or `no-sort` (case-insensitive;
    /// empty items ignored).
    pub fn parse(list: &str) -> Option<Self> {
        let mut s = GroupStrategy::default();
        for item in list.split(',').map(|i| i.trim().to_ascii_lowercase()) {
            match item.as_str() {
                "" => {}
                "runs" => s.direct = Some(false),
                "direct" => s.direct = Some(true),
                "global" => s.local = Some(Local::Global),
                "private" => s.local = Some(Local::Private),
                "compact" => s.local = Some(Local::Compact),
                "sort" => s.sort = Some(true),
                "no-sort" => s.sort = Some(false),
                _ => return None,
            }
        }
        Some(s)
    }

    /// The strategy `GPULANES_GROUP` names (unset or empty: the engine's
    /// choices), which [`Engine::new`](crate::Engine::new) honours.
    pub fn from_env() -> crate::Result<Self> {
        const VAR: &str = "GPULANES_GROUP";
        let value = match std::env::var(VAR) {
            Err(std::env::VarError::NotPresent) => return Ok(Self::default()),
            Err(std::env::VarError::NotUnicode(v)) => v.to_string_lossy().into_owned(),
            Ok(v) => v,
        };
        Self::parse(&value).ok_or(crate::Error::InvalidEnv {
            var: VAR,
            value,
            expected: Self::NAMES,
        })
    }
}

/// Words of one group in a compact pass's workgroup memory (`PW`).
pub const COMPACT_WORDS: u32 = 8;

/// Which accumulators a pass fills, and which pass of the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PassKind {
    pub mode: GroupMode,
    pub sum: bool,
    pub max: bool,
    pub min: bool,
    /// 0: everything and the keys' high words; 1: the keys' low words.
    pub phase: u32,
    /// Where the pass accumulates before the global accumulators.
    pub local: Local,
    /// Add rows one by one instead of run by run (keys that change group
    /// on most rows; keyed modes only).
    pub direct: bool,
}

/// Rows one invocation folds in a run (`RUN` in group.wgsl): CPU adapters
/// run few, wide workgroups, so they get longer runs.
pub fn rows_per_invocation(shape: KernelShape) -> u32 {
    match shape {
        KernelShape::Narrow => 256,
        KernelShape::Workgroup | KernelShape::Subgroup => 16,
    }
}

/// Invocations per workgroup of the group kernel (`WG`): the shape's,
/// except that on CPU adapters (the narrow shape) private and compact
/// passes run 64, eight 8-wide vectors that one core runs in turn, so that
/// a workgroup's private accumulators serve many rows while no invocation
/// loops long (Mesa's llvmpipe stops an invocation after 65535 loop
/// iterations in all, over every loop of the shader).
pub fn group_workgroup_size(shape: KernelShape, local: Local) -> u32 {
    match (shape, local) {
        (KernelShape::Narrow, Local::Private | Local::Compact) => 64,
        _ => shape.workgroup_size(),
    }
}

/// Units (WG * RUN rows) one workgroup of a private or compact pass takes
/// at most: each workgroup adds its private accumulators to the global
/// ones once, so fewer, longer workgroups add them less often, while GPUs
/// need enough workgroups to fill their cores.
///
/// On CPU adapters an invocation of a pass adding rows one by one
/// (`direct`) then takes 8 * 256 = 2048 rows, each at most about a dozen
/// loop iterations (the row loop, the window's compare-exchange, five
/// limb additions with their carries), some 25,000 in all: well under
/// llvmpipe's 65535. Passes going run by run may end a run on every row
/// and then run twice as many iterations per row, so they keep one unit
/// (256 rows) per workgroup.
pub fn units_per_private_workgroup(shape: KernelShape, direct: bool) -> u64 {
    match (shape, direct) {
        (KernelShape::Narrow, true) => 8,
        (KernelShape::Narrow, false) => 1,
        (KernelShape::Workgroup | KernelShape::Subgroup, _) => 4,
    }
}

/// How far above a window's bit 0 a value may lie (`WIN_SPAN`): a run of
/// RUN values each under 2^(span + magnitude bits) must fit the 96-bit
/// window.
fn window_span(dtype: Dtype, shape: KernelShape) -> u32 {
    let headroom = 32 - rows_per_invocation(shape).leading_zeros(); // log2(RUN) + 1
    (96 - headroom).saturating_sub(magnitude_bits(dtype))
}

/// How far under the first value of a run its window's bit 0 is placed
/// (`WIN_BELOW`): about half the span, so smaller and larger values of the
/// same group share the window. Integers sit at position 0.
fn window_below(dtype: Dtype) -> u32 {
    match dtype {
        Dtype::F32 => 36,
        Dtype::F64 => 16,
        _ => 0,
    }
}

/// Groups whose accumulators (laid out as `limbs` says) one workgroup
/// keeps privately (the `PRIVATE` variant) within `workgroup_bytes` of
/// workgroup memory.
pub fn private_groups(limbs: Limbs, workgroup_bytes: u32) -> u32 {
    workgroup_bytes / (limbs.stride * 4)
}

/// Groups one workgroup of a compact pass holds within `workgroup_bytes`
/// (0 for 64-bit dtypes, whose values do not leave room in a 64-bit sum).
pub fn compact_groups(dtype: Dtype, workgroup_bytes: u32) -> u32 {
    if dtype.words() == 1 {
        workgroup_bytes / (COMPACT_WORDS * 4)
    } else {
        0
    }
}

/// How far above a compact group's bit 0 a value may lie (`P_SPAN`): the
/// values one workgroup adds ([`units_per_private_workgroup`] units of
/// rows added one by one, the only way compact passes take rows), each
/// under 2^(span + magnitude bits), must sum inside 63 bits.
fn compact_span(dtype: Dtype, shape: KernelShape) -> u32 {
    let rows = units_per_private_workgroup(shape, true)
        * group_workgroup_size(shape, Local::Compact) as u64
        * rows_per_invocation(shape) as u64;
    let headroom = 64 - (rows - 1).leading_zeros(); // ceil(log2(rows))
    (63 - headroom).saturating_sub(magnitude_bits(dtype))
}

/// How far under a compact group's first value its bit 0 is placed
/// (`P_BELOW`): a third of the span, most of it left for larger values
/// (a group's sum grows past its first value). Integers sit at position 0.
fn compact_below(dtype: Dtype, shape: KernelShape) -> u32 {
    match dtype {
        Dtype::F32 | Dtype::F64 => compact_span(dtype, shape) / 3,
        _ => 0,
    }
}

/// The group kernel's WGSL for one dtype, accumulator layout and shape,
/// accumulating first where `local` says, in up to `workgroup_bytes` of
/// workgroup memory.
pub fn group_shader_source(
    dtype: Dtype,
    limbs: Limbs,
    shape: KernelShape,
    local: Local,
    workgroup_bytes: u32,
) -> String {
    let priv_words = match local {
        Local::Global => 0,
        Local::Private => private_groups(limbs, workgroup_bytes) * limbs.stride,
        Local::Compact => compact_groups(dtype, workgroup_bytes) * COMPACT_WORDS,
    };
    format!(
        "// {dtype}, {shape} group kernel, {limbs} limbs, {local:?} accumulation.\n\
         const WG: u32 = {wg}u;\n\
         const RUN: u32 = {run}u;\n\
         const LIMBS: u32 = {limbs}u;\n\
         const STRIDE: u32 = {stride}u;\n\
         const WPE: u32 = {wpe}u;\n\
         const DTYPE: u32 = {code}u;\n\
         const WIN_BELOW: u32 = {below}u;\n\
         const WIN_SPAN: u32 = {span}u;\n\
         const PRIVATE: bool = {private};\n\
         const COMPACT: bool = {compact};\n\
         const P_BELOW: u32 = {p_below}u;\n\
         const P_SPAN: u32 = {p_span}u;\n\
         const PRIV_WORDS: u32 = {priv_words}u;\n\
         const TOUCH_FIRST: bool = {touch_first};\n\
         {GROUP_WGSL}",
        shape = shape.name(),
        wg = group_workgroup_size(shape, local),
        run = rows_per_invocation(shape),
        limbs = limbs.len,
        stride = limbs.stride,
        wpe = dtype.words(),
        code = dtype.code(),
        below = window_below(dtype),
        span = window_span(dtype, shape),
        private = local == Local::Private,
        compact = local == Local::Compact,
        p_below = compact_below(dtype, shape),
        p_span = compact_span(dtype, shape),
        priv_words = priv_words.max(1),
        // CPU adapters run atomics lane after lane (group.wgsl's touch_row).
        touch_first = shape == KernelShape::Narrow,
    )
}

/// The group kernel's layout and pipelines of one engine.
pub(crate) struct GroupKernels {
    shape: KernelShape,
    pub layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    /// Per dtype and limbs a side: the global, private and compact
    /// variants.
    modules: Mutex<HashMap<(Dtype, u32, Local), wgpu::ShaderModule>>,
    workgroup_bytes: u32,
    pipelines: Mutex<HashMap<(Dtype, u32, PassKind), wgpu::ComputePipeline>>,
    build: KernelBuild,
    /// Forced choices (see [`GroupStrategy`]).
    pub strategy: GroupStrategy,
    /// The kernel that finishes groups on the device.
    pub finish: super::finish::FinishKernels,
    /// The kernel that finds a device-resident float column's spread.
    pub spread: super::spread::SpreadKernel,
}

impl GroupKernels {
    /// `private` false: no workgroup-private passes (wgpu's GL backend:
    /// the private variant's dispatch never completed on Mesa's llvmpipe,
    /// so GL runs the global one, which gives the same bits).
    pub fn new(
        device: &wgpu::Device,
        shape: KernelShape,
        private: bool,
        build: KernelBuild,
        strategy: GroupStrategy,
    ) -> Self {
        let (layout, pipeline_layout) = kernel_layouts(
            device,
            "reduce groups",
            &GROUP_BINDINGS,
            GROUP_PARAMS_BYTES,
            false,
        );
        GroupKernels {
            shape,
            layout,
            pipeline_layout,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            build,
            strategy,
            finish: super::finish::FinishKernels::new(device, build),
            spread: super::spread::SpreadKernel::new(device, build),
            workgroup_bytes: if private {
                device.limits().max_compute_workgroup_storage_size
            } else {
                0
            },
        }
    }

    /// Groups a private pass of accumulators laid out as `limbs` says holds
    /// (0: none fit, or no private passes on this device).
    pub fn private_groups(&self, limbs: Limbs) -> u32 {
        private_groups(limbs, self.workgroup_bytes)
    }

    /// Groups a compact pass of `dtype` holds (0: none).
    pub fn compact_groups(&self, dtype: Dtype) -> u32 {
        compact_groups(dtype, self.workgroup_bytes)
    }

    pub fn shape(&self) -> KernelShape {
        self.shape
    }

    /// Pipelines built so far (tests check what recording builds).
    #[cfg(test)]
    pub fn pipelines_built(&self) -> usize {
        crate::sync::lock(&self.pipelines).len()
    }

    /// The pipeline for `dtype`, accumulators of `limbs.len` limbs a side
    /// and `kind`, built on first use.
    pub fn pipeline(
        &self,
        device: &wgpu::Device,
        dtype: Dtype,
        limbs: Limbs,
        kind: PassKind,
    ) -> wgpu::ComputePipeline {
        // Built outside the caches' locks (see `cached`): a build can take
        // long (about 100 ms on lavapipe), and a thread that wants a
        // pipeline already built (the lanes' dispatcher, say) must not wait
        // for another thread's build.
        cached(&self.pipelines, (dtype, limbs.len, kind), || {
            let module = cached(&self.modules, (dtype, limbs.len, kind.local), || {
                self.build.module(
                    device,
                    "reduce groups",
                    group_shader_source(
                        dtype,
                        // Base 0: the base is a uniform, not compiled in.
                        Limbs { base: 0, ..limbs },
                        self.shape,
                        kind.local,
                        self.workgroup_bytes,
                    ),
                )
            });
            let flag = |b: bool| if b { 1.0 } else { 0.0 };
            self.build.pipeline(
                device,
                &self.pipeline_layout,
                &module,
                "reduce_groups",
                &[
                    ("MODE", kind.mode as u32 as f64),
                    ("WANT_SUM", flag(kind.sum)),
                    ("WANT_MAX", flag(kind.max)),
                    ("WANT_MIN", flag(kind.min)),
                    ("PHASE", kind.phase as f64),
                    ("DIRECT", flag(kind.direct)),
                ],
            )
        })
    }
}
