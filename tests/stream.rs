//! Streaming reductions (src/stream/): bitwise equal to the in-memory path
//! for every op, NaN policy and partition form, at lengths around unit,
//! chunk and group boundaries, for chunks of any size; memory held within a
//! budget much smaller than the data; clear errors (naming the file and the
//! byte offset) for truncated, corrupt and unreadable input, and nothing
//! partial reported. Also runs the `partitions` and `stream_file` examples
//! in their small default form.

mod common;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use gpulanes::{
    Error, FileFormat, NanPolicy, Op, Partitions, Reduction, StreamOptions, kernels::BLOCK,
    kernels::GROUP,
};

use common::{POLICIES, engine};

/// SplitMix64, for deterministic data and chunk sizes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [0, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[allow(dead_code)]
#[path = "../examples/partitions.rs"]
mod partitions_example;

#[allow(dead_code)]
#[path = "../examples/stream_file.rs"]
mod stream_file_example;

const B: u64 = BLOCK;
/// Chunks of three units: every stream below crosses many chunk edges.
const CHUNK_BYTES: u64 = 3 * BLOCK * 4;

fn small_chunks() -> StreamOptions {
    StreamOptions {
        chunk_bytes: Some(CHUNK_BYTES),
        ..StreamOptions::with_budget(8 << 20)
    }
}

/// Same values bit for bit (any NaN equals any NaN), same counts.
fn assert_same(got: &Reduction, want: &Reduction, what: &str) {
    assert_eq!(got.op, want.op, "{what}");
    assert_eq!(got.counts, want.counts, "{what}: counts");
    assert_eq!(got.values.len(), want.values.len(), "{what}: partitions");
    for (i, (g, w)) in got.values.iter().zip(&want.values).enumerate() {
        let same = match (g, w) {
            (Some(g), Some(w)) => g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            (None, None) => true,
            _ => false,
        };
        assert!(
            same,
            "{what}: partition {i}: stream {g:?} vs in-memory {w:?}"
        );
    }
}

/// Values whose sums round differently under any other tree.
fn data(n: u64, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let x = rng.next_f32() - 0.5;
            if i % 97 == 0 { x * 1e6 } else { x }
        })
        .collect()
}

/// Splits `data` into pieces of irregular sizes (0, 1, odd, a unit +- 1, big).
fn pieces(data: &[f32], seed: u64) -> Vec<&[f32]> {
    let sizes = [0usize, 1, 7, 8191, 8193, 3, 40_000, 12_289, 2];
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = sizes[rng.below(sizes.len() as u64) as usize].min(data.len() - at);
        out.push(&data[at..at + n]);
        at += n;
    }
    out
}

fn in_memory(data: &[f32], op: Op, p: &Partitions, nan: NanPolicy) -> Reduction {
    engine()
        .reduce_partitions(data, op, p, nan)
        .unwrap_or_else(|e| panic!("in-memory {op} {p:?}: {e}"))
}

#[test]
fn lengths_around_unit_and_chunk_edges_are_bitwise_equal() {
    let chunk = CHUNK_BYTES / 4;
    let mut lens = vec![0, 1, B - 1, B, B + 1, 2 * B + 5];
    for k in [1, 2] {
        lens.extend([k * chunk - 1, k * chunk, k * chunk + 1]);
    }
    let longest = *lens.iter().max().unwrap();
    let all = data(longest, 1);
    for &n in &lens {
        let d = &all[..n as usize];
        let mut parts = vec![
            Partitions::Whole,
            Partitions::EqualSize(5),
            Partitions::EqualSize(B - 1),
            Partitions::EqualSize(B),
            Partitions::EqualSize(B + 1),
            Partitions::EqualSize(2 * B + 7),
            Partitions::EqualSize(chunk + 1),
        ];
        if n > 0 {
            parts.push(Partitions::Offsets(vec![0, 0, n / 3, n / 3, n, n]));
        }
        for p in &parts {
            for op in [Op::Sum, Op::Max] {
                let want = in_memory(d, op, p, NanPolicy::Propagate);
                let got = engine()
                    .reduce_chunks(pieces(d, n), op, p, NanPolicy::Propagate, &small_chunks())
                    .unwrap();
                assert_same(&got, &want, &format!("n={n} {op} {p:?}"));
            }
        }
    }
}

#[test]
fn one_item_partitions_under_a_small_binding_limit_are_bitwise_equal() {
    // 64 KiB bindings hold 4095 segments: a submission of the default chunk
    // size has far more one-item units than that, so it must cut its units
    // to what one segment table can hold (it used to fail with an internal
    // error).
    //
    // A long partition first makes the tree two levels deep, so each of the
    // one-item partitions after it becomes a partial-pass task of one
    // partial: those submissions must be capped to one table too.
    let mut long_then_ones = vec![0u64, 20_000];
    long_then_ones.extend((1..=10_000).map(|i| 20_000 + i));
    let cases = [
        (
            data(20_000, 31),
            5,
            Partitions::EqualSize(1),
            &[Op::Sum, Op::Max][..],
            "one-item partitions",
        ),
        (
            data(30_000, 32),
            6,
            Partitions::Offsets(long_then_ones),
            &[Op::Sum][..],
            "a long partition, then 10000 one-item partitions",
        ),
    ];
    for (d, seed, p, ops, what) in cases {
        for &op in ops {
            let what = format!("{op}, {what}, 64 KiB bindings");
            let got = common::small_binding_engine()
                .reduce_chunks(
                    pieces(&d, seed),
                    op,
                    &p,
                    NanPolicy::Propagate,
                    &StreamOptions::default(),
                )
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_same(&got, &in_memory(&d, op, &p, NanPolicy::Propagate), &what);
        }
    }
}

#[test]
fn every_op_and_nan_policy_with_special_values() {
    let n = 5 * B + 17;
    let mut d = data(n, 2);
    // NaN and infinities in some partitions, an all-NaN partition, -0.0 runs.
    for i in (0..n as usize).step_by(6007) {
        d[i] = f32::NAN;
    }
    d[100] = f32::INFINITY;
    d[20_000] = f32::NEG_INFINITY;
    d[30_000] = f32::INFINITY;
    for x in &mut d[(3 * B) as usize..(3 * B + 300) as usize] {
        *x = f32::NAN;
    }
    for x in &mut d[(4 * B) as usize..(4 * B + 9) as usize] {
        *x = -0.0;
    }
    let parts = [
        Partitions::Whole,
        Partitions::EqualSize(B + 3),
        Partitions::EqualSize(300),
        Partitions::Offsets(vec![0, 3 * B, 3 * B, 3 * B + 300, 4 * B, 4 * B + 9, n]),
    ];
    for p in &parts {
        for op in Op::ALL {
            for nan in POLICIES {
                let want = in_memory(&d, op, p, nan);
                let got = engine()
                    .reduce_chunks(pieces(&d, 3), op, p, nan, &small_chunks())
                    .unwrap();
                assert_same(&got, &want, &format!("{op} {nan:?} {p:?}"));
            }
        }
    }
}

/// A reader that hands out at most `step` bytes per read, so values arrive
/// split across reads.
struct Dribble<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

#[test]
fn readers_in_odd_pieces_are_bitwise_equal() {
    let d = data(4 * B + 3, 3);
    let bytes: &[u8] = bytemuck::cast_slice(&d);
    for step in [3, 4099, 1 << 20] {
        for p in [Partitions::Whole, Partitions::EqualSize(B + 1)] {
            let want = in_memory(&d, Op::Sum, &p, NanPolicy::Ignore);
            let got = engine()
                .reduce_reader(
                    Dribble { bytes, step },
                    Op::Sum,
                    &p,
                    NanPolicy::Ignore,
                    &small_chunks(),
                )
                .unwrap();
            assert_same(&got, &want, &format!("step {step} {p:?}"));
        }
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("gpulanes-stream-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A version 1.0 `.npy` header for `shape` (`dict` overrides the dict text).
fn npy_header(shape: &[u64], dict: Option<&str>) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut h = dict.map(str::to_string).unwrap_or(format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    ));
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

fn write_file(path: &Path, parts: &[&[u8]]) {
    let mut f = std::fs::File::create(path).unwrap();
    for p in parts {
        f.write_all(p).unwrap();
    }
}

#[test]
fn a_budget_much_smaller_than_the_file_is_respected_and_bitwise_equal() {
    // 64 MiB and a bit: 2050 units, so the whole input needs a full group
    // at level 1 (reduced while streaming) and short groups at levels 1 and 2.
    let n = B * GROUP + B + 5;
    let d = data(n, 4);
    let dir = TempDir::new("budget");
    let raw = dir.path("big.f32");
    write_file(&raw, &[bytemuck::cast_slice(&d)]);
    let budget = 1 << 20;
    let options = StreamOptions::with_budget(budget);
    let cases = [
        (Op::Sum, Partitions::Whole),
        (Op::Max, Partitions::Whole),
        (Op::Mean, Partitions::EqualSize(3 * B + 1)),
        // Small partitions beside a deep one pass single partials through
        // levels 1 and 2, as the in-memory plan does.
        (Op::Sum, Partitions::Offsets(vec![0, 5, n - 7, n])),
    ];
    for (op, p) in cases {
        let want = in_memory(&d, op, &p, NanPolicy::Propagate);
        let input = gpulanes::InputFile::open(&raw, FileFormat::RawF32).unwrap();
        let (got, stats) = engine()
            .reduce_input_file(input, op, &p, NanPolicy::Propagate, &options)
            .unwrap();
        assert_same(&got, &want, &format!("{op} {p:?}"));
        assert_eq!(stats.items, n);
        assert!(
            stats.peak_bytes <= budget,
            "peak {} bytes over the {budget}-byte budget ({stats:?})",
            stats.peak_bytes
        );
        assert!(stats.chunk_bytes * 16 <= budget, "{stats:?}");
    }
}

#[test]
fn npy_files_one_and_two_dimensional() {
    let dir = TempDir::new("npy");
    let (rows, cols) = (7u64, B + 11);
    let d = data(rows * cols, 5);
    let two_d = dir.path("m.npy");
    write_file(
        &two_d,
        &[&npy_header(&[rows, cols], None), bytemuck::cast_slice(&d)],
    );
    let options = small_chunks();
    // Per-row results of a 2-D file equal reduce_axis(Axis(1)).
    let m = ndarray::ArrayView2::from_shape((rows as usize, cols as usize), &d).unwrap();
    for op in Op::ALL {
        let want = engine()
            .reduce_axis(m, ndarray::Axis(1), op, NanPolicy::Propagate)
            .unwrap();
        let got = engine()
            .reduce_file(
                &two_d,
                FileFormat::Npy,
                op,
                &Partitions::EqualSize(cols),
                NanPolicy::Propagate,
                &options,
            )
            .unwrap();
        assert_same(&got, &want, &format!("rows {op}"));
    }
    // An empty 1-D file: sum 0, max empty.
    let empty = dir.path("empty.npy");
    write_file(&empty, &[&npy_header(&[0], None)]);
    let r = engine()
        .reduce_file(
            &empty,
            FileFormat::Npy,
            Op::Max,
            &Partitions::Whole,
            NanPolicy::Propagate,
            &options,
        )
        .unwrap();
    assert_eq!(r.values, vec![None]);
}

fn file_error(path: &Path, format: FileFormat) -> String {
    let err = engine()
        .reduce_file(
            path,
            format,
            Op::Sum,
            &Partitions::Whole,
            NanPolicy::Propagate,
            &small_chunks(),
        )
        .expect_err("a bad file must fail");
    assert!(matches!(err, Error::File { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "{msg} must name the file"
    );
    msg
}

#[test]
fn truncated_corrupt_and_unreadable_files_fail_clearly() {
    let dir = TempDir::new("bad");
    let d = data(1000, 6);
    let body: &[u8] = bytemuck::cast_slice(&d);
    let header = npy_header(&[1000], None);
    let start = header.len(); // 64

    let short = dir.path("short.npy");
    write_file(&short, &[&header, &body[..3996]]);
    let msg = file_error(&short, FileFormat::Npy);
    assert!(
        msg.contains("truncated") && msg.contains(&format!("ends at byte {}", start + 3996)),
        "{msg}"
    );
    assert!(msg.contains(&format!("{}", start + 4000)), "{msg}");

    let long = dir.path("long.npy");
    write_file(&long, &[&header, body, &[0u8; 8]]);
    let msg = file_error(&long, FileFormat::Npy);
    assert!(msg.contains("corrupt: 8 bytes after"), "{msg}");

    let lying = dir.path("lying.npy");
    write_file(&lying, &[&npy_header(&[u64::MAX / 2], None), body]);
    let msg = file_error(&lying, FileFormat::Npy);
    assert!(msg.contains("too large"), "{msg}");

    let magic = dir.path("magic.npy");
    write_file(&magic, &[b"PK\x03\x04 not numpy at all"]);
    assert!(file_error(&magic, FileFormat::Npy).contains("bad magic at byte 0"));

    let cut_header = dir.path("cut_header.npy");
    write_file(&cut_header, &[&header[..40]]);
    assert!(file_error(&cut_header, FileFormat::Npy).contains("ends at byte 40"));

    let f8 = dir.path("f8.npy");
    write_file(
        &f8,
        &[
            &npy_header(
                &[500],
                Some("{'descr': '<f8', 'fortran_order': False, 'shape': (500,), }"),
            ),
            body,
        ],
    );
    assert!(file_error(&f8, FileFormat::Npy).contains("wrong dtype"));

    let raw = dir.path("odd.f32");
    write_file(&raw, &[body, &[1, 2]]);
    let msg = file_error(&raw, FileFormat::RawF32);
    assert!(
        msg.contains("4002 bytes") && msg.contains("byte 4000"),
        "{msg}"
    );

    let missing = dir.path("missing.npy");
    assert!(file_error(&missing, FileFormat::Npy).contains("cannot open"));
    assert!(file_error(&dir.0, FileFormat::RawF32).contains("directory"));
}

/// A reader that fails after `ok` bytes.
struct Failing {
    ok: usize,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.ok);
        buf[..n].fill(0);
        self.ok -= n;
        Ok(n)
    }
}

#[test]
fn reader_errors_name_the_byte_offset_and_report_nothing() {
    let options = small_chunks();
    let e = engine();
    let err = e
        .reduce_reader(
            Failing { ok: 200_000 },
            Op::Sum,
            &Partitions::Whole,
            NanPolicy::Propagate,
            &options,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("read error at byte 200000") && err.contains("disk on fire"),
        "{err}"
    );
    let err = e
        .reduce_reader(
            &[0u8; 10][..],
            Op::Sum,
            &Partitions::Whole,
            NanPolicy::Propagate,
            &options,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("ends at byte 10"), "{err}");
    // Offsets that do not match the streamed length.
    let d = data(3 * B, 7);
    for offsets in [vec![0, B, 2 * B], vec![0, B, 4 * B]] {
        let err = e
            .reduce_chunks(
                [&d[..]],
                Op::Sum,
                &Partitions::Offsets(offsets),
                NanPolicy::Propagate,
                &options,
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidPartitions(_)), "{err}");
    }
    // A failed stream refuses further use instead of reporting a result.
    let mut s = e
        .stream(
            Op::Sum,
            &Partitions::Offsets(vec![0, 5]),
            NanPolicy::Propagate,
            &options,
        )
        .unwrap();
    assert!(s.push(&d).is_err());
    assert!(s.finish().is_err());
    let err = e
        .stream(
            Op::Sum,
            &Partitions::Whole,
            NanPolicy::Propagate,
            &StreamOptions::with_budget(1000),
        )
        .err()
        .expect("tiny budget refused")
        .to_string();
    assert!(err.contains("too small"), "{err}");
}

/// A pipe whose writer stops early: the size cannot be checked up front,
/// so the stream itself must notice.
#[cfg(unix)]
#[test]
fn a_pipe_that_ends_early_fails_with_the_byte_offset() {
    let dir = TempDir::new("fifo");
    let fifo = dir.path("pipe.npy");
    match Command::new("mkfifo").arg(&fifo).status() {
        Ok(s) if s.success() => {}
        _ => {
            eprintln!("mkfifo unavailable: skipped");
            return;
        }
    }
    let header = npy_header(&[100_000], None);
    let start = header.len();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            f.write_all(&header).unwrap();
            let _ = f.write_all(&vec![0u8; 40_000]);
        })
    };
    let msg = file_error(&fifo, FileFormat::Npy);
    writer.join().unwrap();
    let (end, want) = (start + 40_000, start + 400_000);
    assert!(
        msg.contains(&format!("truncated: the file ends at byte {end}"))
            && msg.contains(&format!("should end at byte {want}")),
        "{msg}"
    );
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpulanes"))
        .args(args)
        .output()
        .expect("run gpulanes");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_streams_files_above_the_budget() {
    let dir = TempDir::new("cli");
    let n = 40 * B + 3;
    let d = data(n, 8);
    let raw = dir.path("x.f32");
    write_file(&raw, &[bytemuck::cast_slice(&d)]);
    let want = in_memory(
        &d,
        Op::Sum,
        &Partitions::EqualSize(7 * B),
        NanPolicy::Propagate,
    );
    let raw_s = raw.to_str().unwrap();
    let (code, out, err) = cli(&[
        "reduce",
        "--op",
        "sum",
        "--raw",
        "--budget",
        "1M",
        "--partition-size",
        "57344",
        "--json",
        raw_s,
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let got: Vec<f32> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let want: Vec<f32> = want.values.iter().map(|v| v.unwrap()).collect();
    assert_eq!(got, want);
    // A 2-D .npy above the budget: per-row results stream, same bits as reduce_axis.
    let (rows, cols) = (5u64, 40_000u64);
    let m = dir.path("m.npy");
    let md = &d[..(rows * cols) as usize];
    write_file(
        &m,
        &[&npy_header(&[rows, cols], None), bytemuck::cast_slice(md)],
    );
    let view = ndarray::ArrayView2::from_shape((rows as usize, cols as usize), md).unwrap();
    let want = engine()
        .reduce_axis(view, ndarray::Axis(1), Op::Mean, NanPolicy::Propagate)
        .unwrap();
    let (code, out, err) = cli(&[
        "reduce",
        "--op",
        "mean",
        "--axis",
        "1",
        "--budget",
        "1M",
        "--json",
        m.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let got: Vec<f32> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let want: Vec<f32> = want.values.iter().map(|v| v.unwrap()).collect();
    assert_eq!(got, want);
    // A truncated .npy: exit 2, the file and the offset on stderr, nothing on stdout.
    let bad = dir.path("bad.npy");
    write_file(
        &bad,
        &[&npy_header(&[n + 1], None), bytemuck::cast_slice(&d)],
    );
    let (code, out, err) = cli(&[
        "reduce",
        "--op",
        "max",
        "--budget",
        "1M",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("bad.npy") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn examples_run_in_their_small_form() {
    partitions_example::run(&partitions_example::Args::default()).unwrap();
    stream_file_example::run(&stream_file_example::Args::default()).unwrap();
}
