//! The fuzzers' seed corpora (`fuzz/seeds/`) and the regression corpus
//! (`tests/fuzz-regressions/`), run as a normal test through the same
//! entry points and checks as the fuzz targets: no panic, errors that name
//! the input, the same verdict whether the input's length is known (a
//! regular file) or not (a pipe), and results consistent with the input.

use std::path::{Path, PathBuf};

use gpulanes::npy;

/// Every file of the corpora (the README of the regression folder aside).
fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "fuzz/seeds/npy_header",
        "fuzz/seeds/npy_data",
        "fuzz/seeds/offsets",
    ]
    .iter()
    .chain(&["fuzz/seeds/raw", "tests/fuzz-regressions"])
    {
        for entry in std::fs::read_dir(root.join(dir)).expect("corpus folder") {
            let path = entry.unwrap().path();
            if path.is_file() && path.extension().is_none_or(|e| e != "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The error names the input.
fn named<T>(r: &gpulanes::Result<T>, name: &Path) {
    if let Err(e) = r {
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{}: ", name.display()))
                && msg.len() > name.as_os_str().len() + 10,
            "{msg}"
        );
    }
}

#[test]
fn every_corpus_file_gets_a_sensible_answer_on_every_reader() {
    let files = corpus();
    assert!(files.len() >= 30, "only {} corpus files", files.len());
    let name = Path::new("input");
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let len = Some(data.len() as u64);
        let what = path.display();

        let header = npy::parse_header(&data, name);
        named(&header, name);
        if let Ok(h) = &header {
            assert!(h.checked_data_bytes().is_some(), "{what}");
            assert!(h.data_offset as usize <= data.len(), "{what}");
        }

        let known = npy::read_f32_from(&mut &data[..], name, len);
        let piped = npy::read_f32_from(&mut &data[..], name, None);
        named(&known, name);
        named(&piped, name);
        assert_eq!(
            known.is_ok(),
            piped.is_ok(),
            "{what}: {known:?} vs {piped:?}"
        );
        if let (Ok(a), Ok(h)) = (&known, &header) {
            assert_eq!(a.len() as u64, h.len(), "{what}");
            let end = h.data_end();
            assert_eq!(
                end,
                data.len() as u64,
                "{what}: data accepted with bytes after it"
            );
        }

        let known = npy::read_offsets_from(&mut &data[..], name, len);
        let piped = npy::read_offsets_from(&mut &data[..], name, None);
        named(&known, name);
        assert_eq!(
            known.is_ok(),
            piped.is_ok(),
            "{what}: {known:?} vs {piped:?}"
        );
        if let (Ok(a), Ok(b)) = (&known, &piped) {
            assert_eq!(a, b, "{what}");
        }

        let known = npy::read_raw_f32_from(&mut &data[..], name, len);
        let piped = npy::read_raw_f32_from(&mut &data[..], name, None);
        named(&known, name);
        assert_eq!(known.is_ok(), data.len() % 4 == 0, "{what}");
        assert_eq!(known.is_ok(), piped.is_ok(), "{what}");
        if let (Ok(a), Ok(b)) = (&known, &piped) {
            assert_eq!(a.len(), data.len() / 4, "{what}");
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{what}"
            );
        }
    }
}

/// The state target's checks on its seeds and on every other corpus file:
/// bytes either fail with an error or give a state that serialises back to
/// the same state, merges with itself and finalises every op.
#[test]
fn every_corpus_file_is_a_state_or_an_error() {
    use gpulanes::{NanPolicy, Op, State, StateKind};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = corpus();
    let mut states = 0;
    for entry in std::fs::read_dir(root.join("fuzz/seeds/state")).expect("state seeds") {
        files.push(entry.unwrap().path());
    }
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let Ok(state) = State::from_bytes(&data) else {
            continue;
        };
        states += 1;
        assert_eq!(
            State::from_bytes(&state.to_bytes()).unwrap(),
            state,
            "{}",
            path.display()
        );
        let mut twice = state.clone();
        twice.merge(&state).unwrap();
        for op in Op::ALL {
            if op == Op::Count || StateKind::for_op(op) == state.kind() {
                for nan in [NanPolicy::Propagate, NanPolicy::Ignore] {
                    let _ = state.finalize(op, nan);
                    let _ = twice.finalize(op, nan);
                }
            }
        }
    }
    assert!(states >= 9, "only {states} corpus files are states");
}
