//! Uploads larger than one staging chunk go through the ring of reused
//! staging buffers: the device array holds exactly the host's values (every
//! op over it gives the CPU reference's bits; the sums are exact integers
//! in range, so one lost, moved or stale value changes them), for several
//! chunks with a short last one, for int32, int64 and float64, for arrays
//! split into several device buffers, and for uploads one after another
//! reusing the ring.

mod common;

use common::{SplitMix, scalar_bits};
use gpulanes::{Engine, EngineOptions, NanPolicy, Op, Partitions, Reduction, Scalar};

type Bits = (Vec<Option<(u8, u64)>>, Vec<u64>);

fn bits(r: &Reduction<Scalar>) -> Bits {
    (
        r.values.iter().map(|v| scalar_bits(*v)).collect(),
        r.counts.clone(),
    )
}

/// Every op over the device array against the CPU reference.
fn check<E: gpulanes::Element>(engine: &Engine, data: &[E], what: &str) {
    let array = engine.upload(data).expect("upload");
    assert_eq!(array.len(), data.len() as u64);
    for op in Op::ALL {
        for p in [Partitions::Whole, Partitions::EqualSize(3_000_017)] {
            let nan = NanPolicy::Propagate;
            let want = gpulanes::cpu::reduce(data, op, &p, nan).expect("reference");
            let got = engine
                .reduce_device_typed(&array, op, &p, nan)
                .expect("device");
            assert_eq!(bits(&got), bits(&want), "{what}: {op} {p:?}");
        }
    }
}

/// `n` integers in +-2^20, distinct enough that a value in the wrong place
/// or missing changes the sums.
fn ints(rng: &mut SplitMix, n: usize) -> Vec<i32> {
    (0..n)
        .map(|_| rng.below(1 << 21) as i32 - (1 << 20))
        .collect()
}

#[test]
fn staged_uploads_hold_the_hosts_values() {
    let engine = Engine::new().expect("engine");
    let mut rng = SplitMix::new(41);
    // 16 MiB chunks: 4 chunks and a short fifth, then one just over a chunk.
    let i32s = ints(&mut rng, (64 << 20) / 4 + 12_345);
    check(&engine, &i32s, "int32, 4 chunks and a bit");
    let f64s: Vec<f64> = i32s[..(40 << 20) / 8 + 7]
        .iter()
        .map(|&x| x as f64)
        .collect();
    check(&engine, &f64s, "float64 integers, 2.5 chunks");
    let i64s: Vec<i64> = i32s[..(24 << 20) / 8 + 3]
        .iter()
        .map(|&x| (x as i64) << 20)
        .collect();
    check(&engine, &i64s, "int64, 1.5 chunks");
    let just_over: Vec<i32> = i32s[..(16 << 20) / 4 + 1].to_vec();
    check(&engine, &just_over, "int32, one chunk and one value");
    // The ring's buffers come back from the pool for the next upload.
    for round in 0..3 {
        check(
            &engine,
            &i32s[round..],
            &format!("int32, upload {round} in a row"),
        );
    }
}

#[test]
fn staged_uploads_split_across_device_buffers() {
    // Buffers of at most 24 MiB: a 60 MiB array takes three pieces, each
    // written through the ring (the first two over one chunk).
    let engine = Engine::with_options(
        EngineOptions::default()
            .max_buffer_bytes(24 << 20)
            .max_binding_bytes(24 << 20),
    )
    .expect("engine");
    let mut rng = SplitMix::new(43);
    let data = ints(&mut rng, (60 << 20) / 4 + 5);
    check(&engine, &data, "int32 over three device buffers");
}
