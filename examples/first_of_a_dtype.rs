//! A fresh engine and scheduler serving a stream of float32 real-time
//! requests when the first float64 request arrives: that request runs the
//! float64 kernels once on its own thread before it is queued, so it pays
//! for their pipelines itself and the float32 stream is not held behind
//! them. Prints the float64 request's latency (first and second) and the
//! worst float32 latency around it.
//! `cargo run --release --example first_of_a_dtype`

use std::time::{Duration, Instant};

use gpulanes::{Engine, Lanes, LanesConfig, Op, Request, Scalar};

fn main() -> Result<(), gpulanes::Error> {
    env_logger::init();
    let engine = Engine::new()?;
    let lanes = Lanes::new(&engine, LanesConfig::default())?; // warms float32 only
    let (first, second, worst) = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            let mut worst = Duration::ZERO;
            for _ in 0..200 {
                let t = Instant::now();
                let h = lanes.realtime(Request::host(vec![1.0f32; 4096], Op::Sum))?;
                assert_eq!(h.wait()?.value(), Some(4096.0));
                worst = worst.max(t.elapsed());
            }
            Ok::<_, gpulanes::Error>(worst)
        });
        std::thread::sleep(Duration::from_millis(20));
        let mut times = Vec::new();
        for _ in 0..2 {
            let t = Instant::now();
            let h = lanes.realtime(Request::host_typed(vec![0.5f64; 4096], Op::Sum))?;
            assert_eq!(h.wait()?.value(), Some(Scalar::F64(2048.0)));
            times.push(t.elapsed());
        }
        let worst = stream.join().expect("the float32 stream")?;
        Ok::<_, gpulanes::Error>((times[0], times[1], worst))
    })?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "first float64 request {:.2} ms, second {:.2} ms; worst float32 request beside them {:.2} ms",
        ms(first),
        ms(second),
        ms(worst)
    );
    Ok(())
}
