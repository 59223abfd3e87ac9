//! A fresh engine and scheduler serving a stream of float32 real-time
//! requests when the first float64 reduction and then the first keyed
//! (group-by) request arrive. Each new kind of request builds its
//! pipelines on its own submitting thread (a reduction runs its dtype's
//! kernels once before it is queued; a real-time keyed request is recorded
//! before it is queued), so it pays for them itself and the float32 stream
//! is not held behind them. Prints each new request's latency (first and
//! second of its kind) and the worst float32 latency around them.
//! `cargo run --release --example first_of_a_dtype`

use std::time::{Duration, Instant};

use gpulanes::{Engine, Lanes, LanesConfig, NanPolicy, Op, Request, Scalar};

fn main() -> Result<(), gpulanes::Error> {
    env_logger::init();
    let engine = Engine::new()?;
    let lanes = Lanes::new(&engine, LanesConfig::default())?; // warms float32 reductions only
    let keys: Vec<i32> = (0..4096).map(|i| i % 17).collect();
    let (float64, keyed, worst) = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            let mut worst = Duration::ZERO;
            for _ in 0..300 {
                let t = Instant::now();
                let h = lanes.realtime(Request::host(vec![1.0f32; 4096], Op::Sum))?;
                assert_eq!(h.wait()?.value(), Some(4096.0));
                worst = worst.max(t.elapsed());
            }
            Ok::<_, gpulanes::Error>(worst)
        });
        std::thread::sleep(Duration::from_millis(20));
        let mut float64 = Vec::new();
        for _ in 0..2 {
            let t = Instant::now();
            let h = lanes.realtime(Request::host_typed(vec![0.5f64; 4096], Op::Sum))?;
            assert_eq!(h.wait()?.value(), Some(Scalar::F64(2048.0)));
            float64.push(t.elapsed());
        }
        let mut keyed = Vec::new();
        for _ in 0..2 {
            let t = Instant::now();
            let ops = [Op::Sum, Op::Max];
            let request =
                Request::keyed(keys.clone(), vec![0.5f64; 4096], &ops, NanPolicy::Propagate);
            let grouped = lanes.realtime(request)?.wait()?;
            assert_eq!(grouped.keys.len(), 17);
            keyed.push(t.elapsed());
        }
        let worst = stream.join().expect("the float32 stream")?;
        Ok::<_, gpulanes::Error>((float64, keyed, worst))
    })?;
    let ms = |d: &Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!(
        "first float64 reduction {}, second {}; first keyed request {}, second {}; \
         worst float32 request beside them {}",
        ms(&float64[0]),
        ms(&float64[1]),
        ms(&keyed[0]),
        ms(&keyed[1]),
        ms(&worst)
    );
    Ok(())
}
