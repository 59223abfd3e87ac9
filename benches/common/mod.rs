//! What the criterion benches share: test mode, the engine they measure,
//! the threads that make their inputs.

use gpulanes::Engine;

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
