//! Every shader variant parses and validates with naga (the WGSL front end
//! wgpu uses), with every override value the engine uses.

use gpulanes::KernelShape;
use gpulanes::kernels::shader_source;

fn validate(source: &str, label: &str) {
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
    assert_eq!(
        names,
        ["reduce_elements", "reduce_partials"],
        "{label}: entry points"
    );
    assert!(
        module
            .overrides
            .iter()
            .any(|(_, o)| o.name.as_deref() == Some("OP")),
        "{label}: OP override"
    );
}

#[test]
fn every_kernel_shape_validates() {
    for shape in [
        KernelShape::Workgroup,
        KernelShape::Subgroup,
        KernelShape::Narrow,
    ] {
        validate(&shader_source(shape), shape.name());
    }
}

#[test]
fn every_shader_file_starts_with_a_description() {
    for (name, src) in [
        ("reduce.wgsl", gpulanes::kernels::REDUCE_WGSL),
        ("wide.wgsl", gpulanes::kernels::WIDE_WGSL),
        ("narrow.wgsl", gpulanes::kernels::NARROW_WGSL),
        (
            "tree_workgroup.wgsl",
            gpulanes::kernels::TREE_WORKGROUP_WGSL,
        ),
        ("tree_subgroup.wgsl", gpulanes::kernels::TREE_SUBGROUP_WGSL),
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
