//! The host and the WGSL agree on every layout they share, read from the
//! composed shaders with naga (the WGSL front end wgpu uses), for every
//! dtype, kernel shape and group-kernel variant:
//!
//! - every struct the host writes into a buffer (exact.wgsl's `Params` and
//!   `Segment`, group.wgsl's `Params`) has the size of its `#[repr(C)]`
//!   host struct, and the same named fields at the same offsets with the
//!   same sizes; the byte constants the host sizes buffers with
//!   (`PARAMS_BYTES`, `SEGMENT_BYTES`, `GROUP_PARAMS_BYTES`) equal them;
//! - every entry point's `@group(0) @binding(n)` variables are exactly the
//!   host's bind group layout entries for its pipeline, with the same kind
//!   (uniform, read-only storage, read-write storage);
//! - every constant the host relies on (`BLOCK`, `GROUP`, the workgroup
//!   width, the partial offsets `P_*`, the accumulator offsets `A_*` and
//!   `STRIDE`, the flag bits) evaluates to the host's value, and the last
//!   field of a partial and of an accumulator fits their size.
//!
//! wgpu checks none of this: a struct or offset that drifts on one side
//! still validates and runs, and reads the wrong words. The host's side
//! comes from `gpulanes::layout` and the binding tables in
//! `gpulanes::kernels`, which the library itself builds its layouts and
//! reads its partials with (hidden from the docs, not a public API). No GPU
//! is needed.

use std::collections::BTreeMap;

use gpulanes::kernels::{
    BindingKind, ELEMENTS_BINDINGS, FINISH_BINDINGS, FINISH_PARAMS_BYTES, FINISH_WG,
    GROUP_BINDINGS, GROUP_PARAMS_BYTES, Limbs, Local, PARAMS_BYTES, PARTIAL_BYTES,
    PARTIALS_BINDINGS, RECORD_WORDS, SEGMENT_BYTES, finish_shader_source, group_shader_source,
    shader_source,
};
use gpulanes::layout::{self, HostStruct};
use gpulanes::{Dtype, KernelShape};
use naga::{AddressSpace, Expression, Literal, Module, StorageAccess, TypeInner};

const SHAPES: [KernelShape; 3] = [
    KernelShape::Workgroup,
    KernelShape::Subgroup,
    KernelShape::Narrow,
];

/// A parsed and validated shader with what naga learned about it.
struct Shader {
    label: String,
    module: Module,
    info: naga::valid::ModuleInfo,
}

impl Shader {
    fn new(source: &str, label: String) -> Self {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(source)));
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(source)));
        Shader {
            label,
            module,
            info,
        }
    }

    /// The evaluated value of the module-scope `const name`.
    fn constant(&self, name: &str) -> u64 {
        let (_, c) = self
            .module
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no const {name}", self.label));
        // The front end evaluates every const to a literal.
        match self.module.global_expressions[c.init] {
            Expression::Literal(Literal::U32(v)) => v as u64,
            Expression::Literal(Literal::I32(v)) => u64::try_from(v).unwrap(),
            Expression::Literal(Literal::AbstractInt(v)) => u64::try_from(v).unwrap(),
            ref e => panic!("{}: const {name} is {e:?}, not an integer", self.label),
        }
    }

    /// The struct `name` (the first type of that name, fields by name and
    /// offset and size, and its size).
    fn structure(&self, name: &str) -> (u32, Vec<(String, u32, u32)>) {
        let ctx = self.module.to_ctx();
        let ty = self
            .module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no struct {name}", self.label))
            .1;
        let TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{}: {name} is not a struct", self.label);
        };
        let fields = members
            .iter()
            .map(|m| {
                (
                    m.name.clone().unwrap_or_default(),
                    m.offset,
                    self.module.types[m.ty].inner.size(ctx),
                )
            })
            .collect();
        (*span, fields)
    }

    /// The `@group(0)` bindings entry point `entry` uses, with their kind.
    fn bindings(&self, entry: &str) -> BTreeMap<u32, BindingKind> {
        let (index, _) = self
            .module
            .entry_points
            .iter()
            .enumerate()
            .find(|(_, e)| e.name == entry)
            .unwrap_or_else(|| panic!("{}: no entry point {entry}", self.label));
        let uses = self.info.get_entry_point(index);
        let mut bindings = BTreeMap::new();
        for (handle, var) in self.module.global_variables.iter() {
            let Some(rb) = &var.binding else { continue };
            assert_eq!(rb.group, 0, "{}: {:?} not in group 0", self.label, var.name);
            if uses[handle].is_empty() {
                continue;
            }
            let kind = match var.space {
                AddressSpace::Uniform => BindingKind::Uniform,
                AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
                    BindingKind::ReadWrite
                }
                AddressSpace::Storage { .. } => BindingKind::ReadOnly,
                other => panic!("{}: binding {} in {other:?}", self.label, rb.binding),
            };
            assert!(
                bindings.insert(rb.binding, kind).is_none(),
                "{}: binding {} declared twice",
                self.label,
                rb.binding
            );
        }
        bindings
    }

    /// The byte stride of the runtime array bound at `binding`.
    fn array_stride(&self, binding: u32) -> u32 {
        let var = self
            .module
            .global_variables
            .iter()
            .find(|(_, v)| v.binding.as_ref().is_some_and(|b| b.binding == binding))
            .unwrap_or_else(|| panic!("{}: no binding {binding}", self.label))
            .1;
        match self.module.types[var.ty].inner {
            TypeInner::Array { stride, .. } => stride,
            ref t => panic!("{}: binding {binding} is {t:?}", self.label),
        }
    }

    fn workgroup_size(&self, entry: &str) -> [u32; 3] {
        self.module
            .entry_points
            .iter()
            .find(|e| e.name == entry)
            .unwrap_or_else(|| panic!("{}: no entry point {entry}", self.label))
            .workgroup_size
    }
}

/// A field whose name starts with `_` is padding: the sides may split it
/// differently (`_pad: [u32; 3]` against `_p0`, `_p1`, `_p2`), but both
/// structs must have the same size and the same named fields, in the same
/// order, at the same offsets, with the same sizes (bytemuck's `Pod` rules
/// out implicit padding on the host, so the rest is explicit padding).
fn check_struct(shader: &Shader, host: &HostStruct) {
    let (span, fields) = shader.structure(host.wgsl);
    let label = format!("{}: struct {}", shader.label, host.wgsl);
    assert_eq!(span as usize, host.size, "{label}: size (WGSL, host)");
    let wgsl: Vec<(&str, usize, usize)> = fields
        .iter()
        .filter(|f| !f.0.starts_with('_'))
        .map(|f| (f.0.as_str(), f.1 as usize, f.2 as usize))
        .collect();
    let rust: Vec<(&str, usize, usize)> = host
        .fields
        .iter()
        .filter(|f| !f.name.starts_with('_'))
        .map(|f| (f.name, f.offset, f.size))
        .collect();
    assert_eq!(
        wgsl, rust,
        "{label}: fields (name, offset, size), WGSL then host"
    );
}

fn check_bindings(shader: &Shader, entry: &str, host: &[(u32, BindingKind)]) {
    let host: BTreeMap<u32, BindingKind> = host.iter().copied().collect();
    assert_eq!(
        shader.bindings(entry),
        host,
        "{}: {entry}'s bindings (WGSL, host layout)",
        shader.label
    );
}

fn check_constants(shader: &Shader, host: &[(&str, u64)]) {
    for &(name, value) in host {
        assert_eq!(
            shader.constant(name),
            value,
            "{}: const {name} (WGSL, host)",
            shader.label
        );
    }
}

fn exact_shaders() -> Vec<(Dtype, KernelShape, Shader)> {
    let mut shaders = Vec::new();
    for shape in SHAPES {
        for dtype in Dtype::ALL {
            let label = format!("exact {dtype} {}", shape.name());
            shaders.push((
                dtype,
                shape,
                Shader::new(&shader_source(dtype, shape), label),
            ));
        }
    }
    shaders
}

/// Every group-kernel variant: the global one, and private and compact
/// ones in the workgroup-memory limits of common devices.
fn group_shaders() -> Vec<(Dtype, Limbs, KernelShape, Local, Shader)> {
    let mut shaders = Vec::new();
    for shape in SHAPES {
        for dtype in Dtype::ALL {
            for limbs in Limbs::classes(dtype) {
                for local in Local::ALL {
                    for bytes in [16384, 32768] {
                        let label = format!(
                            "group {dtype} {} limbs {} {local:?} {bytes}",
                            shape.name(),
                            limbs.len
                        );
                        let source = group_shader_source(dtype, limbs, shape, local, bytes);
                        shaders.push((dtype, limbs, shape, local, Shader::new(&source, label)));
                    }
                }
            }
        }
    }
    shaders
}

#[test]
fn exact_structs_match_the_host() {
    let hosts = layout::exact_structs();
    for (_, _, shader) in exact_shaders() {
        for host in &hosts {
            check_struct(&shader, host);
        }
        let label = &shader.label;
        let params = shader.structure("Params").0 as u64;
        assert_eq!(params, PARAMS_BYTES, "{label}: Params bytes (WGSL, host)");
        let segment = shader.structure("Segment").0 as u64;
        assert_eq!(
            segment, SEGMENT_BYTES,
            "{label}: Segment bytes (WGSL, host)"
        );
        // The segment table is bound as an array of `Segment`s.
        let stride = shader.array_stride(1) as u64;
        assert_eq!(stride, SEGMENT_BYTES, "{label}: segment table stride");
    }
}

#[test]
fn group_structs_match_the_host() {
    let hosts = layout::group_structs();
    for (_, _, _, _, shader) in group_shaders() {
        for host in &hosts {
            check_struct(&shader, host);
        }
        let params = shader.structure("Params").0 as u64;
        assert_eq!(
            params, GROUP_PARAMS_BYTES,
            "{}: Params bytes (WGSL, host)",
            shader.label
        );
    }
}

#[test]
fn exact_bindings_match_the_host_layouts() {
    for (_, _, shader) in exact_shaders() {
        check_bindings(&shader, "reduce_elements", &ELEMENTS_BINDINGS);
        check_bindings(&shader, "reduce_partials", &PARTIALS_BINDINGS);
    }
}

#[test]
fn group_bindings_match_the_host_layout() {
    for (_, _, _, _, shader) in group_shaders() {
        check_bindings(&shader, "reduce_groups", &GROUP_BINDINGS);
    }
}

#[test]
fn exact_constants_match_the_host() {
    for (dtype, shape, shader) in exact_shaders() {
        check_constants(&shader, &layout::exact_constants(dtype, shape));
        // The host dispatches one workgroup of this width per unit.
        for entry in ["reduce_elements", "reduce_partials"] {
            assert_eq!(
                shader.workgroup_size(entry),
                [shape.workgroup_size(), 1, 1],
                "{}: {entry}'s workgroup size",
                shader.label
            );
        }
        // The key (two words) is a partial's last field.
        let words = layout::partial_words(dtype) as u64;
        assert!(
            shader.constant("P_KEY") + 2 <= words,
            "{}: the key must fit a partial of {words} words",
            shader.label
        );
        if dtype != Dtype::F64 {
            assert_eq!(words * 4, PARTIAL_BYTES, "{dtype}: partial bytes");
        }
    }
}

#[test]
fn group_constants_match_the_host() {
    for (dtype, limbs, shape, local, shader) in group_shaders() {
        let constants = layout::group_constants(dtype, limbs, shape, local);
        check_constants(&shader, &constants);
        assert_eq!(
            shader.workgroup_size("reduce_groups"),
            [shader.constant("WG") as u32, 1, 1],
            "{}: reduce_groups' workgroup size",
            shader.label
        );
        // The min key (two words) is an accumulator's last field, then
        // padding up to a 64-byte line in narrow layouts.
        let end = shader.constant("A_MIN") + 2;
        let stride = shader.constant("STRIDE");
        assert!(
            end == stride || (!limbs.is_full(dtype) && end < stride && stride % 16 == 0),
            "{}: the accumulator ends with the min key ({end} of {stride} words)",
            shader.label
        );
    }
}

/// The finishing kernel reads the accumulators the group kernel of its
/// dtype writes and writes records the host reads: the same layout
/// constants, the host's bindings, uniform size, record width and
/// workgroup size.
#[test]
fn finishing_kernel_matches_the_group_kernel_and_the_host() {
    for (dtype, limbs) in Dtype::ALL
        .into_iter()
        .flat_map(|d| Limbs::classes(d).into_iter().map(move |l| (d, l)))
    {
        let finish = Shader::new(
            &finish_shader_source(dtype, limbs),
            format!("finish {dtype} limbs {}", limbs.len),
        );
        let group = Shader::new(
            &group_shader_source(dtype, limbs, KernelShape::Workgroup, Local::Global, 16384),
            format!("group {dtype} limbs {}", limbs.len),
        );
        for name in [
            "LIMBS",
            "STRIDE",
            "DTYPE",
            "A_COUNT",
            "A_FLAGS",
            "FLAG_NONNEG",
        ] {
            assert_eq!(
                finish.constant(name),
                group.constant(name),
                "{dtype}: {name} (finish, group)"
            );
        }
        // The record starts with the nine words from A_COUNT on: counts,
        // flags and both keys, the accumulator's last fields.
        assert!(group.constant("A_MIN") + 2 <= group.constant("STRIDE"));
        assert_eq!(group.constant("A_MIN") + 2 - group.constant("A_COUNT"), 9);
        assert_eq!(
            finish.constant("REC"),
            RECORD_WORDS as u64,
            "{dtype}: record words"
        );
        check_bindings(&finish, "finish_groups", &FINISH_BINDINGS);
        assert_eq!(
            finish.structure("FinishParams").0 as u64,
            FINISH_PARAMS_BYTES,
            "{dtype}: FinishParams bytes (WGSL, host)"
        );
        assert_eq!(
            finish.workgroup_size("finish_groups"),
            [FINISH_WG as u32, 1, 1]
        );
    }
}

/// The spread kernel's bindings, uniform size and workgroup size are the
/// host's.
#[test]
fn spread_kernel_matches_the_host() {
    use gpulanes::kernels::{
        SPREAD_BINDINGS, SPREAD_PARAMS_BYTES, SPREAD_WG, spread_shader_source,
    };
    for dtype in [Dtype::F32, Dtype::F64] {
        let shader = Shader::new(&spread_shader_source(dtype), format!("spread {dtype}"));
        check_bindings(&shader, "spread", &SPREAD_BINDINGS);
        assert_eq!(
            shader.structure("SpreadParams").0 as u64,
            SPREAD_PARAMS_BYTES,
            "{dtype}: SpreadParams bytes (WGSL, host)"
        );
        assert_eq!(shader.workgroup_size("spread"), [SPREAD_WG, 1, 1]);
        assert_eq!(shader.constant("DTYPE"), dtype.code() as u64);
    }
}
