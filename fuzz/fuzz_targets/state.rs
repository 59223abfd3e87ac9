//! Fuzz target: serialised partial states. Any bytes either fail to parse
//! with an error or give a state that serialises back to the same bytes,
//! merges with itself and finalises every op without panicking.
#![no_main]

use gpulanes::{NanPolicy, Op, State, StateKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(state) = State::from_bytes(data) else {
        return;
    };
    assert_eq!(State::from_bytes(&state.to_bytes()).unwrap(), state);
    let mut twice = state.clone();
    let _ = twice.merge(&state);
    for op in Op::ALL {
        if op == Op::Count || StateKind::for_op(op) == state.kind() {
            for nan in [NanPolicy::Propagate, NanPolicy::Ignore] {
                let _ = state.finalize(op, nan);
                let _ = twice.finalize(op, nan);
            }
        }
    }
});
