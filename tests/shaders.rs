//! Every shader variant parses and validates with naga (the WGSL front end
//! wgpu uses), with every override value the engine uses.

use gpulanes::kernels::shader_source;
use gpulanes::{Dtype, KernelShape};

fn validate(source: &str, label: &str) {
    validate_entries(source, label, &["reduce_elements", "reduce_partials"], "OP");
}

fn validate_entries(source: &str, label: &str, entries: &[&str], override_name: &str) {
    let module = match naga::front::wgsl::parse_str(source) {
        Ok(m) => m,
        Err(e) => panic!("{label}: WGSL parse error:\n{}", e.emit_to_string(source)),
    };
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    );
    if let Err(e) = validator.validate(&module) {
        panic!("{label}: validation error:\n{}", e.emit_to_string(source));
    }
    let names: Vec<&str> = module
        .entry_points
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, entries, "{label}: entry points");
    assert!(
        module
            .overrides
            .iter()
            .any(|(_, o)| o.name.as_deref() == Some(override_name)),
        "{label}: {override_name} override"
    );
}

#[test]
fn every_kernel_shape_validates() {
    for shape in [
        KernelShape::Workgroup,
        KernelShape::Subgroup,
        KernelShape::Narrow,
    ] {
        for dtype in Dtype::ALL {
            validate(
                &shader_source(dtype, shape),
                &format!("{dtype} {}", shape.name()),
            );
        }
    }
}

#[test]
fn every_shader_file_starts_with_a_description() {
    for (name, src) in [
        ("exact.wgsl", gpulanes::kernels::EXACT_WGSL),
        ("exact_f32.wgsl", gpulanes::kernels::EXACT_F32_WGSL),
        ("exact_f64.wgsl", gpulanes::kernels::EXACT_F64_WGSL),
        ("exact_int.wgsl", gpulanes::kernels::EXACT_INT_WGSL),
        ("exact_float.wgsl", gpulanes::kernels::EXACT_FLOAT_WGSL),
        ("exact_entry.wgsl", gpulanes::kernels::EXACT_ENTRY_WGSL),
        ("group.wgsl", gpulanes::kernels::GROUP_WGSL),
        ("finish_groups.wgsl", gpulanes::kernels::FINISH_WGSL),
        ("spread.wgsl", gpulanes::kernels::SPREAD_WGSL),
    ] {
        let head: Vec<&str> = src.lines().take(3).collect();
        assert!(
            head.iter().all(|l| l.starts_with("//")),
            "{name} must open with a comment block"
        );
        assert!(
            src.contains("dispatch") || src.contains("Dispatch") || src.contains("Entry points"),
            "{name} must say how it is dispatched"
        );
    }
}

/// Translates one entry point, with `OP` set, to SPIR-V (Vulkan), MSL
/// (Metal), HLSL (DX12) and GLSL (GL): their compilers are not here, so
/// naga's back ends, which wgpu uses to reach them, are the next best check.
fn translate(source: &str, label: &str, op: u32, entry: &str) {
    translate_with(source, label, &[("OP", op as f64)], entry);
}

fn translate_with(source: &str, label: &str, constants: &[(&str, f64)], entry: &str) {
    let op = format!("{constants:?}");
    let module = naga::front::wgsl::parse_str(source).expect("parses");
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .expect("validates");
    let constants: naga::back::PipelineConstants =
        constants.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, entry)),
        &constants,
    )
    .unwrap_or_else(|e| panic!("{label} OP={op} {entry}: overrides: {e}"));
    let pipeline = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry.to_string(),
    };
    naga::back::spv::write_vec(
        &module,
        &info,
        &naga::back::spv::Options::default(),
        Some(&pipeline),
    )
    .unwrap_or_else(|e| panic!("{label} OP={op} {entry}: SPIR-V: {e}"));
    let mut msl = String::new();
    let msl_pipeline = naga::back::msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, entry.to_string())),
        ..Default::default()
    };
    naga::back::msl::Writer::new(&mut msl)
        .write(
            &module,
            &info,
            &naga::back::msl::Options {
                fake_missing_bindings: true,
                ..Default::default()
            },
            &msl_pipeline,
        )
        .unwrap_or_else(|e| panic!("{label} OP={op} {entry}: MSL: {e}"));
    let mut hlsl = String::new();
    let hlsl_options = naga::back::hlsl::Options {
        fake_missing_bindings: true,
        ..Default::default()
    };
    naga::back::hlsl::Writer::new(&mut hlsl, &hlsl_options, &Default::default())
        .write(&module, &info, None)
        .unwrap_or_else(|e| panic!("{label} OP={op} {entry}: HLSL: {e}"));
    let mut glsl = String::new();
    let glsl_options = naga::back::glsl::Options {
        version: naga::back::glsl::Version::new_gles(310),
        ..Default::default()
    };
    let glsl_pipeline = naga::back::glsl::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry.to_string(),
        multiview: None,
    };
    naga::back::glsl::Writer::new(
        &mut glsl,
        &module,
        &info,
        &glsl_options,
        &glsl_pipeline,
        naga::proc::BoundsCheckPolicies::default(),
    )
    .and_then(|mut w| w.write().map(|_| ()))
    .unwrap_or_else(|e| panic!("{label} OP={op} {entry}: GLSL: {e}"));
}

#[test]
fn every_kernel_translates_to_every_backend() {
    for shape in [KernelShape::Workgroup, KernelShape::Narrow] {
        for dtype in Dtype::ALL {
            let source = shader_source(dtype, shape);
            let label = format!("{dtype} {}", shape.name());
            for op in 0..3 {
                for entry in ["reduce_elements", "reduce_partials"] {
                    translate(&source, &label, op, entry);
                }
            }
        }
    }
}

/// The group kernel: every dtype, accumulator layout and shape, global,
/// private and compact accumulation, every group mode and key phase, rows
/// run by run and (keyed modes) one by one, all accumulators wanted.
#[test]
fn every_group_kernel_variant_validates_and_translates() {
    use gpulanes::kernels::{Limbs, Local, group_shader_source};
    for shape in [KernelShape::Workgroup, KernelShape::Narrow] {
        for (dtype, limbs) in Dtype::ALL
            .into_iter()
            .flat_map(|d| Limbs::classes(d).into_iter().map(move |l| (d, l)))
        {
            for local in Local::ALL {
                let source = group_shader_source(dtype, limbs, shape, local, 16384);
                let label = format!(
                    "group {dtype} {} limbs {} {local:?}",
                    shape.name(),
                    limbs.len
                );
                validate_entries(&source, &label, &["reduce_groups"], "MODE");
                let global = local == Local::Global;
                for mode in 0..4 {
                    for phase in 0..if global { 2 } else { 1 } {
                        // Rows one by one: keyed modes only.
                        for direct in if mode < 2 { 0..2 } else { 0..1 } {
                            let constants = [
                                ("MODE", mode as f64),
                                ("WANT_SUM", 1.0),
                                ("WANT_MAX", 1.0),
                                ("WANT_MIN", 1.0),
                                ("PHASE", phase as f64),
                                ("DIRECT", direct as f64),
                            ];
                            translate_with(&source, &label, &constants, "reduce_groups");
                        }
                    }
                }
            }
        }
    }
}

/// The kernel that finishes keyed groups: every dtype and accumulator
/// layout, with and without sums and means.
#[test]
fn every_finishing_kernel_variant_validates_and_translates() {
    use gpulanes::kernels::{Limbs, finish_shader_source};
    for (dtype, limbs) in Dtype::ALL
        .into_iter()
        .flat_map(|d| Limbs::classes(d).into_iter().map(move |l| (d, l)))
    {
        let source = finish_shader_source(dtype, limbs);
        let label = format!("finish {dtype} limbs {}", limbs.len);
        validate_entries(&source, &label, &["finish_groups"], "WANT_MEAN");
        for (sum, mean) in [(false, false), (true, false), (true, true)] {
            let constants = [
                ("WANT_SUM", sum as u32 as f64),
                ("WANT_MEAN", mean as u32 as f64),
            ];
            translate_with(&source, &label, &constants, "finish_groups");
        }
    }
}

/// The kernel that finds a device-resident float column's spread: both
/// float dtypes.
#[test]
fn every_spread_kernel_validates_and_translates() {
    use gpulanes::kernels::spread_shader_source;
    for dtype in [Dtype::F32, Dtype::F64] {
        let source = spread_shader_source(dtype);
        let label = format!("spread {dtype}");
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
            panic!("{label}: WGSL parse error:\n{}", e.emit_to_string(&source))
        });
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        );
        if let Err(e) = validator.validate(&module) {
            panic!("{label}: validation error:\n{}", e.emit_to_string(&source));
        }
        let names: Vec<&str> = module
            .entry_points
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["spread"], "{label}: entry points");
        translate_with(&source, &label, &[], "spread");
    }
}
