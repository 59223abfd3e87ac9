//! What the criterion benches share: test mode, the engine they measure,
//! the threads that make their inputs, and the parts of the `gpulanes
//! bench` command (checks, data, sizes) they use as the CLI does.

use gpulanes::Engine;

#[allow(dead_code, unused_imports)]
#[path = "../../src/bin/gpulanes/measure/check.rs"]
pub mod check;
#[allow(dead_code, unused_imports)]
#[path = "../../src/bin/gpulanes/measure/data.rs"]
pub mod data;
#[allow(dead_code, unused_imports)]
#[path = "../../src/bin/gpulanes/measure/size.rs"]
pub mod size;

/// `cargo test --benches` (no `--bench` argument) or `-- --test`.
pub fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

/// The default engine, and whether its adapter is a software one (said
/// on stderr, naming `bench`: its timings say nothing about GPU speed).
pub fn engine(bench: &str) -> (Engine, bool) {
    let engine = Engine::new().expect("an adapter (run scripts/ensure-vulkan.sh)");
    let software = engine.adapter().software;
    if software {
        eprintln!(
            "{bench} bench: software adapter {:?}: timings say nothing about GPU speed",
            engine.adapter().name
        );
    }
    (engine, software)
}

/// Threads for making inputs: all there are.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
