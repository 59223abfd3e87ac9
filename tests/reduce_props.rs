//! Property tests: every op x every partition form x both NaN policies on
//! random data (NaN, infinities, signed zeros and subnormals mixed in)
//! against the exact CPU reference, and bitwise determinism across runs,
//! engine caps, tree variants and API paths. The comparison rule and the
//! sum/mean error bound are documented in `tests/common/mod.rs`.

mod common;

use common::*;
use gpulanes::{Engine, NanPolicy, Op, Partitions, Reduction};
use ndarray::{Array2, Axis, s};
use proptest::prelude::*;

proptest! {
    #![proptest_config(config(40))]

    /// Whole buffer, plus the strided 1-D view path (`reduce_view`).
    #[test]
    fn whole_matches_reference(data in data_strategy()) {
        check_all_ops(engine(), &data, &Partitions::Whole, "whole");
        let array = ndarray::Array1::from(data.clone());
        // Start at 1 (an offset, strided view) unless the input is empty.
        let start = data.len().min(1);
        let strided = array.slice(s![start..;3]);
        let collected: Vec<f32> = strided.iter().copied().collect();
        for op in Op::ALL {
            for nan in POLICIES {
                let got = engine().reduce_view(strided, op, nan).expect("reduce_view");
                assert_matches_reference(&got, &collected, op, &Partitions::Whole, nan, "strided view");
            }
        }
    }

    /// Equal partitions (the last one short unless the size divides the length).
    #[test]
    fn equal_size_matches_reference((data, size) in data_and_size()) {
        check_all_ops(engine(), &data, &Partitions::EqualSize(size), "equal size");
    }

    /// Arrow offsets with empty partitions at the start, middle and end.
    #[test]
    fn offsets_match_reference((data, offsets) in data_and_offsets()) {
        check_all_ops(engine(), &data, &Partitions::Offsets(offsets), "offsets");
    }

    /// `reduce_axis` along axis 0 (columns) and 1 (rows) of a 2-D array, and
    /// the transposed view reduced along the other axis gives the same bits.
    #[test]
    fn axis_matches_reference(
        (rows, cols, data) in (0usize..24, 0usize..400, prop_oneof![Just(0u32), Just(3), Just(40)])
            .prop_flat_map(|(r, c, rate)| {
                (Just(r), Just(c), proptest::collection::vec(element(rate), r * c))
            })
    ) {
        let a = Array2::from_shape_vec((rows, cols), data.clone()).expect("shape");
        // Lanes laid out contiguously: rows for axis 1, columns for axis 0.
        let by_row = Partitions::Offsets((0..=rows as u64).map(|i| i * cols as u64).collect());
        let col_major: Vec<f32> = a.t().iter().copied().collect();
        let by_col = Partitions::Offsets((0..=cols as u64).map(|i| i * rows as u64).collect());
        for op in Op::ALL {
            for nan in POLICIES {
                let rows_r = engine().reduce_axis(a.view(), Axis(1), op, nan).expect("axis 1");
                assert_eq!(rows_r.len(), rows);
                assert_matches_reference(&rows_r, &data, op, &by_row, nan, "axis 1");
                let cols_r = engine().reduce_axis(a.view(), Axis(0), op, nan).expect("axis 0");
                assert_eq!(cols_r.len(), cols);
                assert_matches_reference(&cols_r, &col_major, op, &by_col, nan, "axis 0");
                // A non-contiguous (transposed) view takes the copying path.
                let t_rows = engine().reduce_axis(a.t(), Axis(0), op, nan).expect("t axis 0");
                assert_same_bits(&t_rows, &rows_r, "transposed view, axis 0 vs axis 1");
                let t_cols = engine().reduce_axis(a.t(), Axis(1), op, nan).expect("t axis 1");
                assert_same_bits(&t_cols, &cols_r, "transposed view, axis 1 vs axis 0");
            }
        }
    }
}

/// One of the partition forms, for the determinism properties.
fn partitions_strategy() -> impl Strategy<Value = (Vec<f32>, Partitions)> {
    prop_oneof![
        data_strategy().prop_map(|d| (d, Partitions::Whole)),
        data_and_size().prop_map(|(d, s)| (d, Partitions::EqualSize(s))),
        data_and_offsets().prop_map(|(d, o)| (d, Partitions::Offsets(o))),
    ]
}

/// Device-resident reduction through a caller-owned encoder.
fn via_encode(
    engine: &Engine,
    data: &[f32],
    op: Op,
    partitions: &Partitions,
    nan: NanPolicy,
) -> Reduction {
    let array = engine.upload(data).expect("upload");
    let mut encoder = engine
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let pending = engine
        .encode(&mut encoder, &array, op, partitions, nan)
        .expect("encode");
    let index = engine.queue().submit([encoder.finish()]);
    pending.wait(engine, index).expect("wait")
}

proptest! {
    #![proptest_config(config(24))]

    /// The same bits: twice on one engine, on an engine whose tiny caps
    /// force binding/dispatch/grid splitting, with each kernel shape (wide
    /// with the workgroup tree, wide with subgroups, narrow),
    /// device-resident (default and tiny caps), and through `encode`.
    #[test]
    fn same_bits_everywhere((data, partitions) in partitions_strategy()) {
        let array = engine().upload(&data).expect("upload");
        let tiny_array = tiny_engine().upload(&data).expect("tiny upload");
        for op in Op::ALL {
            for nan in POLICIES {
                let base = reduce(engine(), &data, op, &partitions, nan);
                let what = |path: &str| format!("{op} {nan:?} {partitions:?}: {path}");
                assert_same_bits(&reduce(engine(), &data, op, &partitions, nan), &base, &what("second run"));
                assert_same_bits(&reduce(tiny_engine(), &data, op, &partitions, nan), &base, &what("tiny caps"));
                assert_same_bits(&reduce(no_subgroup_engine(), &data, op, &partitions, nan), &base, &what("subgroups off"));
                assert_same_bits(&reduce(narrow_engine(), &data, op, &partitions, nan), &base, &what("narrow kernels"));
                if let Some(sg) = subgroup_engine() {
                    assert_same_bits(&reduce(sg, &data, op, &partitions, nan), &base, &what("subgroups on"));
                }
                let dev = engine().reduce_device(&array, op, &partitions, nan).expect("reduce_device");
                assert_same_bits(&dev, &base, &what("device-resident"));
                let dev = tiny_engine().reduce_device(&tiny_array, op, &partitions, nan).expect("tiny reduce_device");
                assert_same_bits(&dev, &base, &what("device-resident, tiny caps"));
                assert_same_bits(&via_encode(engine(), &data, op, &partitions, nan), &base, &what("encode + wait"));
            }
        }
    }

    /// A partition's result depends only on its contents: reducing partition
    /// i in place (wherever it starts, aligned to 4 or not) gives the same
    /// bits as reducing the same items as a whole buffer of their own.
    #[test]
    fn partition_result_depends_only_on_contents(
        (data, offsets) in data_and_offsets(),
        nan in prop_oneof![Just(NanPolicy::Propagate), Just(NanPolicy::Ignore)],
    ) {
        let partitions = Partitions::Offsets(offsets.clone());
        for op in Op::ALL {
            let all = reduce(engine(), &data, op, &partitions, nan);
            for (i, w) in offsets.windows(2).enumerate() {
                let part = &data[w[0] as usize..w[1] as usize];
                let alone = reduce(engine(), part, op, &Partitions::Whole, nan);
                let one = Reduction { op, values: vec![all.values[i]], counts: vec![all.counts[i]] };
                assert_same_bits(&one, &alone, &format!("{op} {nan:?} partition {i} at {}", w[0]));
            }
        }
    }
}

/// The convenience methods agree with `reduce_partitions`.
#[test]
fn convenience_methods_agree() {
    let mut rng = SplitMix::new(7);
    for n in [0usize, 1, 5, 300, 9000] {
        let data = mixed_data(&mut rng, n, 0);
        let whole = |op| {
            reduce(
                engine(),
                &data,
                op,
                &Partitions::Whole,
                NanPolicy::Propagate,
            )
        };
        let sum = engine().sum(&data).expect("sum");
        assert_eq!(
            Some(sum.to_bits()),
            whole(Op::Sum).value().map(f32::to_bits)
        );
        let bits = |v: Option<f32>| v.map(f32::to_bits);
        assert_eq!(
            bits(engine().mean(&data).unwrap()),
            bits(whole(Op::Mean).value())
        );
        assert_eq!(
            bits(engine().max(&data).unwrap()),
            bits(whole(Op::Max).value())
        );
        assert_eq!(
            bits(engine().min(&data).unwrap()),
            bits(whole(Op::Min).value())
        );
        for op in Op::ALL {
            assert_eq!(
                bits(engine().reduce(&data, op).unwrap()),
                bits(whole(op).value())
            );
        }
    }
}

/// The comparison rule has teeth: results that are off by more than the
/// bound, by one ulp for max/min, by the sign of a zero, in emptiness or in
/// a count are all rejected.
#[test]
fn comparison_rule_rejects_wrong_results() {
    let data: Vec<f32> = vec![1.5, -0.0, 2.25, 1e-3, -7.0, 0.0, -0.0];
    let p = Partitions::Offsets(vec![0, 4, 5, 5, 7]);
    let nan = NanPolicy::Propagate;
    let mut passed_wrongly = Vec::new();
    let mut rejects = |got: Reduction, what: &str| {
        let op = got.op;
        let d = data.clone();
        let p = p.clone();
        let r = std::panic::catch_unwind(move || {
            assert_matches_reference(&got, &d, op, &p, nan, "mutated");
        });
        if r.is_ok() {
            passed_wrongly.push(format!("{op}: {what}"));
        }
    };
    // (The panics caught below print into this test's captured output only.)
    for op in Op::ALL {
        let good = reference(&data, op, &p, nan);
        assert_matches_reference(&good, &data, op, &p, nan, "reference itself");
        let mut bad = good.clone();
        bad.counts[0] += 1;
        rejects(bad, "count");
        let mut bad = good.clone();
        bad.values[2] = Some(1.0);
        rejects(bad, "empty partition given a value");
        if op != Op::Sum && op != Op::Count {
            let mut bad = good.clone();
            bad.values[0] = None;
            rejects(bad, "value dropped");
        }
        let x = good.values[0].unwrap();
        let mut bad = good.clone();
        bad.values[0] = Some(match op {
            // Off by far more than the bound.
            Op::Sum | Op::Mean => x + 1e-3,
            // Off by one ulp.
            _ => f32::from_bits(x.to_bits() + 1),
        });
        rejects(bad, "value");
        if op != Op::Count {
            // Partition 1 is [-0.0]: -0.0 as sum, max and min; flip its sign.
            let mut bad = good.clone();
            let z = bad.values[1].unwrap();
            bad.values[1] = Some(-z);
            if op == Op::Mean {
                bad.values[1] = Some(f32::NAN);
            }
            rejects(bad, "sign of zero / NaN");
        }
    }
    assert!(
        passed_wrongly.is_empty(),
        "wrong results passed the rule: {passed_wrongly:?}"
    );
}
