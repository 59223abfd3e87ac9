//! The two lanes from Python: `realtime(...)` and `batch(...)` submit a
//! reduction of any dtype the engine takes and complete a Python future (a
//! `concurrent.futures.Future` subclass the package makes awaitable) from
//! a waiter thread, so threads block on `.result(timeout)` and asyncio
//! tasks `await` it while the GIL stays free.
//!
//! `keyed(...)` submits a keyed (group-by) reduction of any value dtype to
//! either lane; its future gets the distinct keys and one result per op.
//!
//! The scheduler takes host data it owns (`Arc<[T]>`), so the values (and
//! keys) are copied once on submission.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gpulanes::lanes::{LaneSnapshot, WhenFull};
use gpulanes::{Dtype, Element, Lane, LanesConfig, Op, Partitions, Reduction, Request, Scalar};
use numpy::PyReadonlyArray1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{
    Engine, engine_error, input, keyed, parse_nan, parse_op, parse_ops, partitions, to_numpy,
};

/// Asks the waiter thread of one submission to cancel it.
#[pyclass(frozen, module = "gpulanes._gpulanes")]
pub struct CancelToken(Arc<AtomicBool>);

#[pymethods]
impl CancelToken {
    fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The scheduler (native side of `gpulanes.Lanes`).
#[pyclass(frozen, module = "gpulanes._gpulanes")]
pub struct Lanes {
    inner: Arc<gpulanes::Lanes>,
}

/// How often a waiter looks for a cancellation while its result is not in.
const CANCEL_POLL: Duration = Duration::from_millis(20);

impl Lanes {
    /// Extracts, copies and submits; the waiter thread completes `future`.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        rt: bool,
        op: Op,
        build: impl FnOnce(Request<Scalar>) -> Request<Scalar>,
        parts: Partitions,
        future: Py<PyAny>,
    ) -> PyResult<CancelToken> {
        let whole = parts == Partitions::Whole;
        let mut col = input::extract(x, !whole)?;
        let dtype = col.dtype;
        let prepared = col.prepare(parts)?;
        fn copied<E: Element>(p: &input::Prepared, op: Op) -> Request<Scalar> {
            Request::host_typed(Arc::<[E]>::from(p.slice::<E>()), op)
        }
        let request = match dtype {
            Dtype::F32 => copied::<f32>(&prepared, op),
            Dtype::F64 => copied::<f64>(&prepared, op),
            Dtype::I32 => copied::<i32>(&prepared, op),
            Dtype::U32 => copied::<u32>(&prepared, op),
            Dtype::I64 => copied::<i64>(&prepared, op),
        };
        let all_null = prepared.all_null.clone();
        let request = build(request.partitions(prepared.partitions.clone()));
        let lanes = self.inner.clone();
        let handle = py
            .detach(move || {
                if rt {
                    lanes.realtime(request)
                } else {
                    lanes.batch(request)
                }
            })
            .map_err(engine_error)?;
        let mut handle = Some(handle);
        spawn_waiter(
            future,
            move |cancel| {
                let h = handle.take()?;
                match h.wait_timeout(CANCEL_POLL) {
                    Ok(r) => Some(r),
                    Err(back) => {
                        if cancel.load(Ordering::Relaxed) {
                            back.cancel();
                        }
                        handle = Some(back);
                        None
                    }
                }
            },
            move |py, f, result| deliver(py, f, op, dtype, result, &all_null),
        )
    }
}

/// Starts the thread that waits for one submission and completes `future`:
/// `step(cancel)` waits up to [`CANCEL_POLL`] and gives the result once it
/// is in (cancelling the submission, after a wait, once `cancel` is set by
/// the token);
/// `deliver` hands the result to the future. After the interpreter has
/// begun to shut down there is no one left to tell: the result is dropped,
/// and so is the future, without touching Python (a leak at exit).
fn spawn_waiter<R: Send + 'static>(
    future: Py<PyAny>,
    mut step: impl FnMut(&AtomicBool) -> Option<R> + Send + 'static,
    deliver: impl FnOnce(Python<'_>, &Py<PyAny>, R) + Send + 'static,
) -> PyResult<CancelToken> {
    let flag = Arc::new(AtomicBool::new(false));
    let cancel = flag.clone();
    std::thread::Builder::new()
        .name("gpulanes-py-waiter".into())
        .spawn(move || {
            let result = loop {
                if let Some(r) = step(&cancel) {
                    break r;
                }
            };
            let mut slot = Some(future);
            Python::try_attach(|py| {
                if let Some(f) = slot.take() {
                    deliver(py, &f, result);
                }
            });
            if let Some(f) = slot.take() {
                std::mem::forget(f);
            }
        })
        .map_err(|e| PyValueError::new_err(format!("cannot start a waiter thread: {e}")))?;
    Ok(CancelToken(flag))
}

/// A deadline in seconds as a `Duration`.
fn parse_timeout(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    timeout.map(|t| seconds("timeout", t)).transpose()
}

/// Completes `future` with `(values, valid)` through its `_deliver`, or
/// with the error through `_fail`. A future already cancelled by its owner
/// refuses both; that is not an error.
fn deliver(
    py: Python<'_>,
    future: &Py<PyAny>,
    op: Op,
    dtype: Dtype,
    result: gpulanes::Result<Reduction<Scalar>>,
    all_null: &[bool],
) {
    let outcome = match result {
        Ok(r) => {
            let values: Vec<Option<Scalar>> = if op == Op::Count {
                r.counts
                    .iter()
                    .map(|&c| Some(Scalar::I64(c as i64)))
                    .collect()
            } else {
                r.values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        if all_null.get(i).copied().unwrap_or(false) {
                            None
                        } else {
                            *v
                        }
                    })
                    .collect()
            };
            to_numpy(py, op, dtype, &values)
                .and_then(|pair| future.call_method1(py, "_deliver", pair))
        }
        Err(e) => future.call_method1(py, "_fail", (engine_error(e).value(py),)),
    };
    if let Err(e) = outcome {
        e.write_unraisable(py, Some(future.bind(py)));
    }
}

/// A duration setting in seconds, checked.
fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a finite, non-negative number of seconds under 2^64, got {value}"
        ))
    })
}

/// A lane's metrics as a dict (latencies in seconds).
fn lane_dict<'py>(py: Python<'py>, lane: &LaneSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("queue_depth", lane.queue_depth)?;
    d.set_item("submits", lane.submits)?;
    d.set_item("completed", lane.completed)?;
    d.set_item("failed", lane.failed)?;
    d.set_item("cancelled", lane.cancelled)?;
    d.set_item("deadline_misses", lane.deadline_misses)?;
    d.set_item("bytes", lane.bytes)?;
    d.set_item("throughput_bytes_per_s", lane.throughput_bytes_per_s)?;
    d.set_item("chunk_bytes_p50", lane.chunk_bytes_p50)?;
    d.set_item("chunk_bytes_max", lane.chunk_bytes_max)?;
    let l = &lane.latency;
    let latency = PyDict::new(py);
    latency.set_item("count", l.count)?;
    for (name, us) in [
        ("p50", l.p50_us),
        ("p99", l.p99_us),
        ("p999", l.p999_us),
        ("max", l.max_us),
        ("mean", l.mean_us),
    ] {
        latency.set_item(name, us * 1e-6)?;
    }
    d.set_item("latency", latency)?;
    Ok(d)
}

#[pymethods]
impl Lanes {
    /// The scheduler on `engine`, with the settings given (durations in
    /// seconds; see `LanesConfig`); `None` keeps a setting's default.
    #[new]
    #[pyo3(signature = (
        engine, *, quantum = None, submit_lead = None, coalesce_delay = None,
        max_batch_in_flight = None, max_realtime_in_flight = None,
        max_coalesced_requests = None, max_coalesced_bytes = None,
        max_realtime_request_bytes = None, realtime_queue_len = None,
        realtime_queue_bytes = None, batch_queue_len = None, when_full = None,
        batch_min_share = None, reject_late = None, min_chunk_units = None,
        max_chunk_units = None, warm_dtypes = Vec::new()
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        engine: &Engine,
        quantum: Option<f64>,
        submit_lead: Option<f64>,
        coalesce_delay: Option<f64>,
        max_batch_in_flight: Option<usize>,
        max_realtime_in_flight: Option<usize>,
        max_coalesced_requests: Option<usize>,
        max_coalesced_bytes: Option<u64>,
        max_realtime_request_bytes: Option<u64>,
        realtime_queue_len: Option<usize>,
        realtime_queue_bytes: Option<u64>,
        batch_queue_len: Option<usize>,
        when_full: Option<&str>,
        batch_min_share: Option<f64>,
        reject_late: Option<bool>,
        min_chunk_units: Option<u64>,
        max_chunk_units: Option<u64>,
        warm_dtypes: Vec<String>,
    ) -> PyResult<Self> {
        let warm = warm_dtypes
            .iter()
            .map(|d| d.parse::<Dtype>().map_err(engine_error))
            .collect::<PyResult<Vec<_>>>()?;
        let mut cfg = LanesConfig::default().warm_dtypes(warm);
        if let Some(q) = quantum {
            cfg = cfg.quantum(seconds("quantum", q)?);
        }
        if let Some(l) = submit_lead {
            cfg = cfg.submit_lead(seconds("submit_lead", l)?);
        }
        if let Some(d) = coalesce_delay {
            cfg = cfg.coalesce_delay(seconds("coalesce_delay", d)?);
        }
        if let Some(n) = max_batch_in_flight {
            cfg = cfg.max_batch_in_flight(n);
        }
        if let Some(n) = max_realtime_in_flight {
            cfg = cfg.max_realtime_in_flight(n);
        }
        if let Some(n) = max_coalesced_requests {
            cfg = cfg.max_coalesced_requests(n);
        }
        if let Some(b) = max_coalesced_bytes {
            cfg = cfg.max_coalesced_bytes(b);
        }
        if let Some(b) = max_realtime_request_bytes {
            cfg = cfg.max_realtime_request_bytes(b);
        }
        if let Some(n) = realtime_queue_len {
            cfg = cfg.realtime_queue_len(n);
        }
        if let Some(b) = realtime_queue_bytes {
            cfg = cfg.realtime_queue_bytes(b);
        }
        if let Some(n) = batch_queue_len {
            cfg = cfg.batch_queue_len(n);
        }
        if let Some(w) = when_full {
            cfg = cfg.when_full(match w {
                "block" => WhenFull::Block,
                "reject" => WhenFull::Reject,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "when_full must be \"block\" or \"reject\", got {other:?}"
                    )));
                }
            });
        }
        if let Some(share) = batch_min_share {
            cfg = cfg.batch_min_share(share);
        }
        if let Some(r) = reject_late {
            cfg = cfg.reject_late(r);
        }
        if let Some(u) = min_chunk_units {
            cfg = cfg.min_chunk_units(u);
        }
        if let Some(u) = max_chunk_units {
            cfg = cfg.max_chunk_units(u);
        }
        let e = engine.inner.clone();
        let inner = py
            .detach(move || gpulanes::Lanes::new(&e, cfg))
            .map_err(engine_error)?;
        Ok(Lanes {
            inner: Arc::new(inner),
        })
    }

    /// Both lanes' metrics: `{"realtime": {...}, "batch": {...}}`.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.inner.metrics();
        let d = PyDict::new(py);
        d.set_item("realtime", lane_dict(py, &m.realtime)?)?;
        d.set_item("batch", lane_dict(py, &m.batch)?)?;
        Ok(d)
    }

    /// Clears the metrics.
    fn reset_metrics(&self) {
        self.inner.reset_metrics();
    }

    /// The batch quantum in use, in seconds.
    #[getter]
    fn quantum(&self) -> f64 {
        self.inner.quantum().as_secs_f64()
    }

    /// The just-in-time submission lead in use, in seconds.
    #[getter]
    fn submit_lead(&self) -> f64 {
        self.inner.submit_lead().as_secs_f64()
    }

    /// Blocks (the GIL released) until both queues are empty and nothing
    /// is on the GPU.
    fn wait_idle(&self, py: Python<'_>) {
        let lanes = self.inner.clone();
        py.detach(move || lanes.wait_idle());
    }

    /// Submits to the real-time lane, over the whole input or its
    /// partitions; `timeout` (seconds) is its deadline.
    #[pyo3(signature = (x, op, future, nan = "propagate", timeout = None, partition_size = None, offsets = None))]
    #[allow(clippy::too_many_arguments)]
    fn realtime(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        op: &str,
        future: Py<PyAny>,
        nan: &str,
        timeout: Option<f64>,
        partition_size: Option<u64>,
        offsets: Option<PyReadonlyArray1<'_, i64>>,
    ) -> PyResult<CancelToken> {
        let op = parse_op(op)?;
        let nan = parse_nan(nan)?;
        let timeout = parse_timeout(timeout)?;
        let parts = partitions(partition_size, offsets)?;
        self.submit(
            py,
            x,
            true,
            op,
            |r| {
                let r = r.nan(nan);
                match timeout {
                    Some(t) => r.timeout(t),
                    None => r,
                }
            },
            parts,
            future,
        )
    }

    /// Submits `ops` over the values of each distinct key to the real-time
    /// lane (`realtime`, with `timeout` as its deadline) or the batch lane;
    /// the future gets `_deliver_keyed(keys, [(values, valid), ...])`.
    /// With `composite`, `keys` is a sequence of key columns.
    #[pyo3(signature = (keys, x, ops, future, realtime, nan = "propagate", timeout = None, composite = false))]
    #[allow(clippy::too_many_arguments)]
    fn keyed(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        x: &Bound<'_, PyAny>,
        ops: Vec<String>,
        future: Py<PyAny>,
        realtime: bool,
        nan: &str,
        timeout: Option<f64>,
        composite: bool,
    ) -> PyResult<CancelToken> {
        let (ops, nan, timeout, lane) = keyed_args(&ops, nan, timeout, realtime)?;
        let read = keyed::extract(keys, x, composite)?;
        let input = &read.input;
        let dtype = input.values.dtype;
        let lanes = self.inner.clone();
        let handle = py
            .detach(|| keyed::submit_lane(&lanes, lane, input, &ops, nan, timeout))
            .map_err(engine_error)?;
        keyed_waiter(future, ops, dtype, handle)
    }

    /// Submits `ops` per key of `index` over `x` to the real-time lane
    /// (`realtime`, with `timeout` as its deadline) or the batch lane, as
    /// `keyed` does; the keys are not read again.
    #[pyo3(signature = (index, x, ops, future, realtime, nan = "propagate", timeout = None))]
    #[allow(clippy::too_many_arguments)]
    fn keyed_by_index(
        &self,
        py: Python<'_>,
        index: &crate::index::GroupIndex,
        x: &Bound<'_, PyAny>,
        ops: Vec<String>,
        future: Py<PyAny>,
        realtime: bool,
        nan: &str,
        timeout: Option<f64>,
    ) -> PyResult<CancelToken> {
        let (ops, nan, timeout, lane) = keyed_args(&ops, nan, timeout, realtime)?;
        let mut col = input::extract(x, true)?;
        let (values, bits) = col.prepare_rows()?;
        let dtype = values.dtype;
        let lanes = self.inner.clone();
        let handle = py
            .detach(|| {
                crate::index::submit_lane(
                    &lanes,
                    lane,
                    index,
                    &values,
                    bits.as_deref(),
                    &ops,
                    nan,
                    timeout,
                )
            })
            .map_err(engine_error)?;
        keyed_waiter(future, ops, dtype, handle)
    }

    /// Submits to the batch lane, over the whole input or its partitions.
    #[pyo3(signature = (x, op, future, nan = "propagate", partition_size = None, offsets = None))]
    #[allow(clippy::too_many_arguments)]
    fn batch(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        op: &str,
        future: Py<PyAny>,
        nan: &str,
        partition_size: Option<u64>,
        offsets: Option<PyReadonlyArray1<'_, i64>>,
    ) -> PyResult<CancelToken> {
        let op = parse_op(op)?;
        let nan = parse_nan(nan)?;
        let parts = partitions(partition_size, offsets)?;
        self.submit(py, x, false, op, |r| r.nan(nan), parts, future)
    }
}

/// A keyed submission's ops, NaN policy, deadline (real-time only) and
/// lane, checked.
fn keyed_args(
    ops: &[String],
    nan: &str,
    timeout: Option<f64>,
    realtime: bool,
) -> PyResult<(Vec<Op>, gpulanes::NanPolicy, Option<Duration>, Lane)> {
    let timeout = parse_timeout(timeout)?;
    if timeout.is_some() && !realtime {
        return Err(PyValueError::new_err(
            "timeout is a real-time deadline; batch jobs take none",
        ));
    }
    let lane = if realtime {
        Lane::RealTime
    } else {
        Lane::Batch
    };
    Ok((parse_ops(ops)?, parse_nan(nan)?, timeout, lane))
}

/// Waits for a submitted keyed request on a thread of its own and gives
/// the Python `future` its result (`_deliver_keyed(keys, [(values,
/// valid), ...])`) or error.
fn keyed_waiter(
    future: Py<PyAny>,
    ops: Vec<Op>,
    dtype: Dtype,
    mut handle: Box<dyn keyed::LaneWait>,
) -> PyResult<CancelToken> {
    spawn_waiter(
        future,
        move |cancel| {
            let r = handle.wait_step(CANCEL_POLL);
            if r.is_none() && cancel.load(Ordering::Relaxed) {
                handle.cancel();
            }
            r
        },
        move |py, f, result| {
            let outcome = match result {
                Ok(r) => keyed::to_python(py, r, &ops, dtype).and_then(|(distinct, pairs)| {
                    f.call_method1(py, "_deliver_keyed", (distinct, pairs))
                }),
                Err(e) => f.call_method1(py, "_fail", (engine_error(e).value(py),)),
            };
            if let Err(e) = outcome {
                e.write_unraisable(py, Some(f.bind(py)));
            }
        },
    )
}
