//! Group-by: per-customer totals, means, largest orders and order counts
//! over unsorted customer ids, in one pass on the GPU, checked against a
//! CPU `HashMap` aggregate of the same rows (sums compared exactly, as
//! exact sums rounded once). Then the same rows shuffled: the same bits.
//! `cargo run --release --example group_by [ROWS] [CUSTOMERS]`.

use std::collections::HashMap;
use std::time::Instant;

use gpulanes::{Engine, NanPolicy, Op, Scalar, State, StateKind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
    let customers: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let engine = Engine::new()?;
    println!("adapter: {}", engine.adapter().name);

    // Orders: a customer id (sparse, unsorted) and an amount in dollars.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let ids: Vec<i64> = (0..rows)
        .map(|_| 1_000_000_007 * (next() % customers) as i64 + 17)
        .collect();
    let amounts: Vec<f64> = (0..rows)
        .map(|_| (next() % 100_000) as f64 / 100.0 + 0.01)
        .collect();

    let ops = [Op::Sum, Op::Mean, Op::Max, Op::Count];
    let t = Instant::now();
    let by_customer = engine.reduce_by_key(&ids, &amounts, &ops, NanPolicy::Propagate)?;
    let gpu_time = t.elapsed();

    // The CPU version: a HashMap of exact per-customer states.
    let t = Instant::now();
    let mut cpu: HashMap<i64, (State, State)> = HashMap::new();
    for (&id, &amount) in ids.iter().zip(&amounts) {
        let e = cpu.entry(id).or_insert_with(|| {
            (
                State::of::<f64>(&[], StateKind::Sum),
                State::of::<f64>(&[], StateKind::Max),
            )
        });
        e.0.merge(&State::of(&[amount], StateKind::Sum))?;
        e.1.merge(&State::of(&[amount], StateKind::Max))?;
    }
    let cpu_time = t.elapsed();

    let sums = by_customer.get(Op::Sum).expect("asked for");
    let means = by_customer.get(Op::Mean).expect("asked for");
    let maxes = by_customer.get(Op::Max).expect("asked for");
    let mut mismatches = 0;
    for (i, id) in by_customer.keys.iter().enumerate() {
        let (sum, max) = &cpu[id];
        let want = (
            sum.finalize(Op::Sum, NanPolicy::Propagate)?,
            sum.finalize(Op::Mean, NanPolicy::Propagate)?,
            max.finalize(Op::Max, NanPolicy::Propagate)?,
            sum.len(),
        );
        if (
            sums.values[i],
            means.values[i],
            maxes.values[i],
            sums.counts[i],
        ) != want
        {
            mismatches += 1;
        }
    }
    println!(
        "{rows} orders, {} customers: GPU group-by {:.1} ms, CPU HashMap {:.1} ms",
        by_customer.len(),
        gpu_time.as_secs_f64() * 1e3,
        cpu_time.as_secs_f64() * 1e3
    );
    for i in 0..by_customer.len().min(3) {
        let show = |v: Option<Scalar>| v.map_or("-".into(), |s| s.to_string());
        println!(
            "customer {:>14}: total {:>12}, mean {:>10}, largest {:>8}, orders {}",
            by_customer.keys[i],
            show(sums.values[i]),
            show(means.values[i]),
            show(maxes.values[i]),
            sums.counts[i]
        );
    }
    if mismatches > 0 || by_customer.len() != cpu.len() {
        return Err(format!("{mismatches} customers differ from the CPU HashMap").into());
    }
    println!("every customer matches the CPU HashMap");

    // The same rows in reverse order: the same bits.
    let rev_ids: Vec<i64> = ids.iter().rev().copied().collect();
    let rev_amounts: Vec<f64> = amounts.iter().rev().copied().collect();
    let again = engine.reduce_by_key(&rev_ids, &rev_amounts, &ops, NanPolicy::Propagate)?;
    if again != by_customer {
        return Err("reversed rows gave different bits".into());
    }
    println!("reversed rows give the same bits");
    Ok(())
}
