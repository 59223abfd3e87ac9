//! `gpulanes info`: the adapter gpulanes picks and the limits that matter.

use gpulanes::Engine;

use crate::Failure;

pub fn run(json: bool) -> Result<(), Failure> {
    let engine = Engine::new()?;
    let a = engine.adapter();
    if json {
        println!(
            "{}",
            serde_json::to_string(a).expect("adapter info serialises")
        );
    } else {
        println!("adapter:        {}", a.name);
        println!("backend:        {}", a.backend);
        println!(
            "device type:    {}{}",
            a.device_type,
            if a.software {
                " (software: timings say nothing about GPU speed)"
            } else {
                ""
            }
        );
        println!("driver:         {} {}", a.driver, a.driver_info);
        println!(
            "kernels:        {} (subgroup size {}..{})",
            a.kernels.name(),
            a.subgroup_min_size,
            a.subgroup_max_size
        );
        println!("timestamps:     {}", a.timestamps);
        println!("flushes subnormals: {}", a.flushes_subnormals);
        println!("max binding:    {} MiB", a.max_storage_binding_bytes >> 20);
        println!("max buffer:     {} MiB", a.max_buffer_bytes >> 20);
        println!(
            "max workgroups: {} per dimension",
            a.max_workgroups_per_dimension
        );
    }
    Ok(())
}
