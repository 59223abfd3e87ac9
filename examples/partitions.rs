//! Per-partition statistics over Arrow-style offsets: per-customer totals,
//! means, largest purchase and purchase counts from a generated dataset of
//! transactions sorted by customer (some amounts missing, stored as NaN and
//! skipped). The data is uploaded once and reduced four times.
//!
//! `cargo run --release --example partitions [--customers N] [--full]`
//! (default 2,000 customers and about 100,000 transactions; `--full` makes
//! 1,000,000 customers and about 50,000,000 transactions).

use gpulanes::{Engine, NanPolicy, Op, Partitions, cpu};

/// What to generate.
#[derive(Clone, Debug)]
pub struct Args {
    pub customers: u64,
}

impl Default for Args {
    fn default() -> Self {
        Args { customers: 2_000 }
    }
}

impl Args {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut out = Args::default();
        if args.iter().any(|a| a == "--full") {
            out.customers = 1_000_000;
        }
        if let Some(i) = args.iter().position(|a| a == "--customers") {
            out.customers = args
                .get(i + 1)
                .and_then(|s| s.parse().ok())
                .expect("--customers N");
        }
        out
    }
}

fn main() -> Result<(), gpulanes::Error> {
    env_logger::init();
    run(&Args::parse())
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn run(args: &Args) -> Result<(), gpulanes::Error> {
    let engine = Engine::new()?;
    let a = engine.adapter();
    println!(
        "adapter: {} ({}, {}{})",
        a.name,
        a.backend,
        a.device_type,
        if a.software { ", software" } else { "" }
    );

    // Transactions sorted by customer: 0 to ~100 purchases each (some
    // customers buy nothing: empty partitions), amounts log-normal-ish in
    // cents, 1% missing (NaN).
    let mut rng = Rng(42);
    let mut offsets = vec![0u64];
    let mut amounts: Vec<f32> = Vec::new();
    for _ in 0..args.customers {
        let purchases = (rng.unit() * rng.unit() * 200.0) as u64;
        for _ in 0..purchases {
            let amount = if rng.next().is_multiple_of(100) {
                f32::NAN
            } else {
                ((rng.unit() * 6.0).exp() * 100.0).round() as f32 / 100.0
            };
            amounts.push(amount);
        }
        offsets.push(amounts.len() as u64);
    }
    println!(
        "{} customers, {} transactions ({:.1} MB)",
        args.customers,
        amounts.len(),
        amounts.len() as f64 * 4.0 / 1e6
    );

    let column = engine.upload(&amounts)?;
    let parts = Partitions::Offsets(offsets);
    let skip = NanPolicy::Ignore;
    let totals = engine.reduce_device(&column, Op::Sum, &parts, skip)?;
    let means = engine.reduce_device(&column, Op::Mean, &parts, skip)?;
    let largest = engine.reduce_device(&column, Op::Max, &parts, skip)?;
    let counts = engine.reduce_device(&column, Op::Count, &parts, skip)?;

    // Top customers by total.
    let mut order: Vec<usize> = (0..totals.len()).collect();
    order.sort_by(|&i, &j| {
        let t = |k: usize| totals.values[k].unwrap_or(0.0);
        t(j).total_cmp(&t(i))
    });
    println!(
        "{:>9}  {:>12}  {:>10}  {:>10}  {:>9}",
        "customer", "total", "mean", "largest", "purchases"
    );
    let show = |v: Option<f32>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
    for &c in order.iter().take(5) {
        println!(
            "{c:>9}  {:>12}  {:>10}  {:>10}  {:>9}",
            show(totals.values[c]),
            show(means.values[c]),
            show(largest.values[c]),
            counts.counts[c]
        );
    }
    let no_purchases = counts.counts.iter().filter(|&&c| c == 0).count();
    println!("customers without a (valid) purchase: {no_purchases} (mean and largest: none)");

    // Check against the exactly rounded CPU reference.
    let reference = cpu::reference(&amounts, Op::Sum, &parts, skip)?;
    let worst_ulps = totals
        .values
        .iter()
        .zip(&reference.values)
        .map(|(g, r)| {
            let (g, r) = (g.unwrap_or(0.0), r.unwrap_or(0.0));
            (g.to_bits() as i64 - r.to_bits() as i64).unsigned_abs()
        })
        .max()
        .unwrap_or(0);
    let max_ref = cpu::reference(&amounts, Op::Max, &parts, skip)?;
    let max_equal = largest.values == max_ref.values;
    println!(
        "vs the exact CPU reference: totals within {worst_ulps} ulp, largest purchases {}",
        if max_equal { "identical" } else { "DIFFERENT" }
    );
    if !max_equal || worst_ulps > 4 {
        return Err(gpulanes::Error::Internal(
            "results disagree with the CPU reference".into(),
        ));
    }
    Ok(())
}
