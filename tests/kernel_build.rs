//! Engines whose kernels are built without wgpu's workgroup-memory
//! zero-initialisation, or without its runtime bounds checks, or that keep
//! a few workgroups resident over many units (the switches a GPU diagnosis
//! compares), give the default engine's bits: the kernels clear their own
//! workgroup memory, so nothing a previous workgroup or unit left there
//! reaches a result.

mod common;

use common::{POLICIES, SplitMix, mixed_data, scalar_bits};
use gpulanes::{Engine, EngineOptions, KernelShape, NanPolicy, Op, Partitions, Reduction, Scalar};

type Bits = (Vec<Option<(u8, u64)>>, Vec<u64>);

fn bits(r: &Reduction<Scalar>) -> Bits {
    (
        r.values.iter().map(|v| scalar_bits(*v)).collect(),
        r.counts.clone(),
    )
}

fn engines(shape: KernelShape) -> Vec<(&'static str, Engine)> {
    let base = || EngineOptions::default().kernels(shape);
    let open = |o: EngineOptions| Engine::with_options(o).expect("engine");
    vec![
        ("default", open(base())),
        (
            "no zero-init",
            open(base().zero_initialize_workgroup_memory(false)),
        ),
        (
            "3 persistent workgroups, no zero-init",
            open(
                base()
                    .persistent_workgroups(3)
                    .zero_initialize_workgroup_memory(false),
            ),
        ),
        (
            "no zero-init, unchecked",
            // SAFETY: the kernels index within their bindings; this test is
            // what shows the unchecked modules give the checked ones' bits.
            open(unsafe {
                base()
                    .zero_initialize_workgroup_memory(false)
                    .unchecked_shaders()
            }),
        ),
    ]
}

#[test]
fn kernels_without_zero_init_or_runtime_checks_give_the_same_bits() {
    let mut rng = SplitMix::new(31);
    let n = 300_007;
    let f32s = mixed_data(&mut rng, n, 20);
    let f64s: Vec<f64> = f32s
        .iter()
        .map(|&x| x as f64 * (1.0 + rng.unit() * 1e-9))
        .collect();
    let i64s: Vec<i64> = (0..n).map(|_| (rng.next_u64() as i64) >> 24).collect();
    // Few keys: the 256-wide shape accumulates them in workgroup memory.
    let keys: Vec<i32> = (0..n).map(|_| rng.below(13) as i32).collect();
    let partitionings = [
        Partitions::Whole,
        Partitions::EqualSize(4099),
        Partitions::EqualSize(64),
    ];
    for shape in [KernelShape::Narrow, KernelShape::Workgroup] {
        let engines = engines(shape);
        let run = |e: &Engine| -> Vec<Bits> {
            let mut out = Vec::new();
            for p in &partitionings {
                for op in Op::ALL {
                    for nan in POLICIES {
                        out.push(bits(&e.reduce_slice(&f32s, op, p, nan).expect("f32")));
                        out.push(bits(&e.reduce_slice(&f64s, op, p, nan).expect("f64")));
                    }
                    let i = e.reduce_slice(&i64s, op, p, NanPolicy::Propagate);
                    out.push(bits(&i.expect("i64")));
                }
            }
            let grouped = e
                .reduce_by_key(&keys, &f32s, &Op::ALL, NanPolicy::Ignore)
                .expect("group by");
            out.extend(grouped.reductions.iter().map(bits));
            out
        };
        let want = run(&engines[0].1);
        for (name, e) in &engines[1..] {
            let got = run(e);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g, w,
                    "{shape:?} {name}: result {i} differs from the default engine's"
                );
            }
        }
    }
}

#[test]
fn a_few_persistent_workgroups_over_hundreds_of_units_give_the_same_bits() {
    // 300 units of 8192 values for 2 workgroups: each takes at most 64
    // units per dispatch, so the engine launches more workgroups here.
    let mut rng = SplitMix::new(37);
    let data = mixed_data(&mut rng, 300 * 8192 + 3, 5);
    let plain = Engine::new().expect("engine");
    let persistent =
        Engine::with_options(EngineOptions::default().persistent_workgroups(2)).expect("engine");
    for op in Op::ALL {
        for p in [Partitions::Whole, Partitions::EqualSize(1 << 20)] {
            let want = plain
                .reduce_slice(&data, op, &p, NanPolicy::Ignore)
                .expect("plain");
            let got = persistent
                .reduce_slice(&data, op, &p, NanPolicy::Ignore)
                .expect("persistent");
            assert_eq!(bits(&got), bits(&want), "{op} {p:?}");
        }
    }
}
