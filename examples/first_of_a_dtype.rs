//! A fresh engine and scheduler serving a stream of float32 real-time
//! requests when, in turn, the first float64 reduction, the first keyed
//! (group-by) real-time request and the first keyed batch job arrive. Each
//! new kind of request builds its pipelines on its own submitting thread (a
//! reduction runs its dtype's kernels once before it is queued; a real-time
//! keyed request is recorded before it is queued; a keyed batch job builds
//! its passes' pipelines when it is planned), so it pays for them itself and
//! the float32 stream is not held behind them. Prints each new request's
//! latency (first and second of its kind) and the worst float32 latency
//! while each ran.
//! `cargo run --release --example first_of_a_dtype`

use std::sync::Mutex;
use std::time::{Duration, Instant};

use gpulanes::{Engine, Lanes, LanesConfig, NanPolicy, Op, Request, Scalar};

/// One kind of request, tried twice: when each try started and ended.
struct Phase {
    name: &'static str,
    tries: [(Instant, Instant); 2],
}

fn main() -> Result<(), gpulanes::Error> {
    env_logger::init();
    let engine = Engine::new()?;
    let lanes = Lanes::new(&engine, LanesConfig::default())?; // warms float32 reductions only
    let keys: Vec<i32> = (0..4096).map(|i| i % 17).collect();
    // A batch job big enough to take several steps, of another key type.
    let batch_keys: Vec<i64> = (0..1 << 20).map(|i| (i * 7919) % 1000 - 500).collect();
    let batch_values: Vec<f32> = (0..1 << 20).map(|i| (i % 64) as f32).collect();
    // Every float32 request: when it was submitted, and how long it took.
    let stream: Mutex<Vec<(Instant, Duration)>> = Mutex::default();
    let done = std::sync::atomic::AtomicBool::new(false);
    let phases = std::thread::scope(|s| {
        let streamer = s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let h = lanes.realtime(Request::host(vec![1.0f32; 4096], Op::Sum))?;
                assert_eq!(h.wait()?.value(), Some(4096.0));
                stream.lock().expect("stream").push((t, t.elapsed()));
            }
            Ok::<_, gpulanes::Error>(())
        });
        let mut phases = Vec::new();
        let mut phase = |name, mut run: Box<dyn FnMut() -> Result<(), gpulanes::Error> + '_>| {
            std::thread::sleep(Duration::from_millis(20));
            let mut tries = [(Instant::now(), Instant::now()); 2];
            for (started, ended) in &mut tries {
                *started = Instant::now();
                run()?;
                *ended = Instant::now();
            }
            phases.push(Phase { name, tries });
            Ok::<_, gpulanes::Error>(())
        };
        phase(
            "float64 reduction",
            Box::new(|| {
                let h = lanes.realtime(Request::host_typed(vec![0.5f64; 4096], Op::Sum))?;
                assert_eq!(h.wait()?.value(), Some(Scalar::F64(2048.0)));
                Ok(())
            }),
        )?;
        phase(
            "keyed real-time request",
            Box::new(|| {
                let ops = [Op::Sum, Op::Max];
                let request =
                    Request::keyed(keys.clone(), vec![0.5f64; 4096], &ops, NanPolicy::Propagate);
                assert_eq!(lanes.realtime(request)?.wait()?.keys.len(), 17);
                Ok(())
            }),
        )?;
        phase(
            "keyed batch job",
            Box::new(|| {
                let ops = [Op::Sum, Op::Min];
                let request = Request::keyed(
                    batch_keys.clone(),
                    batch_values.clone(),
                    &ops,
                    NanPolicy::Propagate,
                );
                assert_eq!(lanes.batch(request)?.wait()?.keys.len(), 1000);
                Ok(())
            }),
        )?;
        std::thread::sleep(Duration::from_millis(20));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        streamer.join().expect("the float32 stream")?;
        Ok::<_, gpulanes::Error>(phases)
    })?;
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let stream = stream.into_inner().expect("stream");
    // The slowest float32 request in flight at any time during a try.
    let worst = |(started, ended): (Instant, Instant)| {
        let beside = stream
            .iter()
            .filter(|(t, d)| *t < ended && *t + *d > started);
        ms(beside.map(|(_, d)| *d).max().unwrap_or_default())
    };
    for p in &phases {
        let [first, second] = p.tries;
        println!(
            "{}: first {} (worst float32 beside it {}), second {} (worst float32 {})",
            p.name,
            ms(first.1 - first.0),
            worst(first),
            ms(second.1 - second.0),
            worst(second),
        );
    }
    Ok(())
}
