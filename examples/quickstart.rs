//! Quickstart: sum, mean and max of a slice, per-row means and per-column
//! maxima of an `ndarray`, an exact float64 sum where float64 arithmetic
//! cancels to nothing, and an int64 sum beyond 2^53, on whatever adapter
//! gpulanes picks. `cargo run --release --example quickstart [N]`.

use gpulanes::{Engine, NanPolicy, Op, Partitions};
use ndarray::{Array2, Axis};

fn main() -> Result<(), gpulanes::Error> {
    env_logger::init();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 20);
    let engine = Engine::new()?;
    let a = engine.adapter();
    println!(
        "adapter: {} ({}, {}{})",
        a.name,
        a.backend,
        a.device_type,
        if a.software { ", software" } else { "" }
    );

    // A slice: values whose f32 running sum drifts, but ours does not.
    let data: Vec<f32> = (0..n).map(|i| 0.1 + (i % 7) as f32 * 1e-3).collect();
    let exact =
        gpulanes::cpu::reference(&data, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)?.value();
    let naive: f32 = data.iter().sum();
    println!("n = {n}");
    println!("sum  (gpu)        = {}", engine.sum(&data)?);
    println!("sum  (exact)      = {}", exact.unwrap_or(0.0));
    println!("sum  (naive f32)  = {naive}");
    println!("mean              = {:?}", engine.mean(&data)?);
    println!("max               = {:?}", engine.max(&data)?);

    // An ndarray: per-row and per-column means of a 2-D array.
    let rows = 4;
    let m = Array2::from_shape_fn((rows, 5), |(r, c)| (r * 10 + c) as f32);
    let row_means = engine.reduce_axis(m.view(), Axis(1), Op::Mean, NanPolicy::Propagate)?;
    let col_max = engine.reduce_axis(m.view(), Axis(0), Op::Max, NanPolicy::Propagate)?;
    println!("row means         = {:?}", row_means.values);
    println!("column maxima     = {:?}", col_max.values);

    // Every dtype: float64 values that cancel (a float64 loop loses the
    // small ones), and int64 values whose sum passes 2^53 (exact as int64).
    let f64s: Vec<f64> = (0..n)
        .map(|i| match i % 4 {
            0 => 1e20,
            1 => 0.25,
            2 => -1e20,
            _ => 0.5,
        })
        .collect();
    let exact64 = engine.reduce_slice(&f64s, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)?;
    let naive64: f64 = f64s.iter().sum();
    println!("float64 sum (gpu) = {:?}", exact64.value());
    println!("float64 sum naive = {naive64}");
    let i64s: Vec<i64> = (0..n as i64).map(|i| (1 << 40) + i).collect();
    let total = engine.reduce_slice(&i64s, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)?;
    println!("int64 sum         = {:?}", total.value());
    Ok(())
}
