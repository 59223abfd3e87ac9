//! Keyed reductions (group-by) in both lanes. A [`KeyedRequest`] is the
//! lanes' form of [`Engine::reduce_by_key`](crate::Engine::reduce_by_key),
//! and its handle yields the same [`Grouped`] result, bit for bit.
//!
//! * The keys are planned (dense or sparse, see [`crate::keyed`]), the
//!   request checked and the pipelines of its passes built on the
//!   submitting thread, so that the dispatcher only uploads, records and
//!   submits.
//! * A real-time keyed request is one submission of its own (it is not
//!   coalesced with other real-time requests): every window of groups,
//!   then one readback per window.
//! * A batch keyed job is submitted a step at a time: each step is a range
//!   of rows sized, when it is submitted, to a batch chunk's share of the
//!   quantum at the job's own measured throughput (group passes run at
//!   rates that depend on the groups, the keys' order and the dtype), within
//!   the chunk bounds counted in values, folded into the same device
//!   accumulators as the steps before it; after a window's last step its
//!   groups are finished on the device and their records read back.
//!   The accumulators are exact integers updated with atomics, which
//!   commute, so how the rows are cut into steps changes no bit of the
//!   result.
//! * Deadlines (real-time only), cancellation, queue bounds, failure
//!   isolation (each submission in its own error scopes) and device loss
//!   behave as for the lane's other requests.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::batch::{claim_batch_timer, read_gpu_time};
use super::handle::{AnySlot, Slot};
use super::poller::track;
use super::quantum::Throughput;
use super::request::{HostWords, Lane, Request};
use super::shared::{Shared, busy_at, lock, mark_done, release_slot};
use crate::context::ErrorScopes;
use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result};
use crate::kernels::BLOCK;
use crate::keyed::accumulators::GroupAccumulators;
use crate::keyed::finish::Finish;
use crate::keyed::index::GroupIndex;
use crate::keyed::limbs::Limbs;
use crate::keyed::nulls::{check_validity, split};
use crate::keyed::run::{
    Chunk, PassShape, RowGroups, Staging, Wanted, WindowBuffers, Words, build_pass_pipelines,
    encode_window_phase, limbs_for, make_chunks,
};
use crate::keyed::{
    Grouped, Key, KeyPlan, WindowKeys, check_request, finish_on_device, finish_window, plan_keys,
    wanted,
};
use crate::op::{NanPolicy, Op};
use crate::pool::PooledBuffer;
use crate::readback::map_read;
use crate::validity::Validity;

/// A keyed batch job times each of its first steps (at most this many)
/// until one has been observed, so its steps are sized from its own rate
/// soon after it starts.
const COLD_TIMED_STEPS: u32 = 4;

/// Results of more groups than this are finished on a thread of their own,
/// not on the poller, whose other completions would wait meanwhile
/// (finishing a group costs about a microsecond).
const FINISH_APART: u64 = 1 << 14;

/// A keyed reduction (group-by) to submit to a lane: `ops` over the values
/// of each distinct key, as
/// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key) computes it.
/// Made by [`Request::keyed`]; the handle yields a [`Grouped`] with the
/// bits `reduce_by_key` gives for the same input.
#[derive(Clone)]
pub struct KeyedRequest<K: Key> {
    keys: Arc<[K]>,
    values: Arc<dyn HostWords>,
    dtype: Dtype,
    rows: u64,
    ops: Vec<Op>,
    nan: NanPolicy,
    /// The distinct keys of rows whose values are null, ascending: groups
    /// the result gets even where no row of theirs has a value.
    null_keys: Arc<[K]>,
    /// Why the request is refused when submitted, found when it was made.
    refused: Option<Error>,
    /// The rows' groups, found before ([`Request::keyed_by_index`]); the
    /// keys are then empty.
    index: Option<Arc<GroupIndex<'static, K>>>,
    /// With an index and nulls: the group of each row that has a value
    /// (the rows gathered into `values`), as the index numbers groups.
    present_groups: Option<Arc<dyn HostWords>>,
    pub(super) deadline: Option<Instant>,
}

impl Request<f32> {
    /// A keyed reduction (group-by): `ops` over the `values` of each
    /// distinct key in `keys` (int32, uint32 or int64, unsorted), one key
    /// per value, with `nan` as in
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key). Submitted
    /// like any request ([`Lanes::realtime`](super::Lanes::realtime),
    /// [`Lanes::batch`](super::Lanes::batch), ...), its handle yields a
    /// [`Grouped`] with the bits `reduce_by_key` gives. A real-time keyed
    /// request is one submission of its own (not coalesced with others); a
    /// batch one is submitted in steps of rows sized to the quantum.
    ///
    /// Keys and values of different lengths, or no ops, are refused when
    /// the request is submitted ([`Error::InvalidInput`]).
    pub fn keyed<K: Key, E: Element>(
        keys: impl Into<Arc<[K]>>,
        values: impl Into<Arc<[E]>>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> KeyedRequest<K> {
        let values: Arc<[E]> = values.into();
        KeyedRequest {
            keys: keys.into(),
            rows: values.len() as u64,
            values: Arc::new(values),
            dtype: E::DTYPE,
            ops: ops.to_vec(),
            nan,
            null_keys: Arc::new([]),
            refused: None,
            index: None,
            present_groups: None,
            deadline: None,
        }
    }

    /// [`Request::keyed`] by a [`GroupIndex`] of the rows' keys
    /// ([`Engine::group_index`](crate::Engine::group_index)): the keys are
    /// not read, named or copied again at submission, so a real-time
    /// request that groups by a column seen before (sparse keys above all,
    /// whose naming is most of such a request's host time) starts on the
    /// GPU sooner. The handle yields the bits
    /// [`Engine::reduce_by_index`](crate::Engine::reduce_by_index) gives
    /// (keyed by every key of the index). Values of another length than
    /// the index's rows, or no ops, are refused when the request is
    /// submitted ([`Error::InvalidInput`]).
    pub fn keyed_by_index<K: Key, E: Element>(
        index: impl Into<Arc<GroupIndex<'static, K>>>,
        values: impl Into<Arc<[E]>>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> KeyedRequest<K> {
        KeyedRequest {
            index: Some(index.into()),
            ..Request::keyed(Vec::<K>::new(), values, ops, nan)
        }
    }

    /// [`Request::keyed_by_index`] where `valid` marks which values hold
    /// one: the bits
    /// [`Engine::reduce_by_index_with_nulls`](crate::Engine::reduce_by_index_with_nulls)
    /// gives (null values skipped and not counted; every key of the index
    /// in the result, a key whose values are all null with `count` 0 and
    /// no other value). The rows with a value and their groups are
    /// gathered into the request here, before it is submitted; the keys
    /// are not read again.
    ///
    /// Values or `valid` of another length than the index's rows, or no
    /// ops, are refused when the request is submitted
    /// ([`Error::InvalidInput`]).
    pub fn keyed_by_index_with_nulls<K: Key, E: Element>(
        index: impl Into<Arc<GroupIndex<'static, K>>>,
        values: &[E],
        valid: Validity<'_>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> KeyedRequest<K> {
        let index = index.into();
        let gathered = index
            .check(values.len(), ops)
            .and_then(|()| check_validity(values.len(), &valid))
            .and_then(|()| index.present_groups(values, &valid));
        match gathered {
            Ok((groups, kept)) => KeyedRequest {
                present_groups: Some(Arc::new(Arc::<[u32]>::from(groups))),
                null_keys: index.shared_keys(),
                index: Some(index),
                ..Request::keyed(Vec::<K>::new(), kept, ops, nan)
            },
            Err(e) => KeyedRequest {
                refused: Some(e),
                ..Request::keyed(Vec::<K>::new(), Vec::<E>::new(), ops, nan)
            },
        }
    }

    /// [`Request::keyed`] where `valid` marks which values hold a value,
    /// as [`Engine::reduce_by_key_with_nulls`](crate::Engine::reduce_by_key_with_nulls)
    /// takes it: null values are skipped and not counted, and a key whose
    /// values are all null is in the result with `count` 0 and no other
    /// value. The rows with a value are gathered into the request here,
    /// before it is submitted (over the host's threads for large inputs);
    /// like any request, it holds its own copy of the rows, nulls or not.
    ///
    /// Keys, values and `valid` of different lengths, or no ops, are
    /// refused when the request is submitted ([`Error::InvalidInput`]).
    pub fn keyed_with_nulls<K: Key, E: Element>(
        keys: &[K],
        values: &[E],
        valid: Validity<'_>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> KeyedRequest<K> {
        let present = check_request(keys.len() as u64, values.len() as u64, ops)
            .and_then(|()| check_validity(values.len(), &valid))
            .and_then(|()| split(keys, values, &valid));
        match present {
            Ok(p) => KeyedRequest {
                null_keys: p.null_keys.into(),
                ..Request::keyed(p.keys, p.values, ops, nan)
            },
            Err(e) => KeyedRequest {
                refused: Some(e),
                ..Request::keyed(Vec::<K>::new(), Vec::<E>::new(), ops, nan)
            },
        }
    }
}

impl<K: Key> KeyedRequest<K> {
    /// Real-time only: fail with [`Error::DeadlineExceeded`] after
    /// `deadline`, as [`Request::deadline`] does.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Real-time only: a deadline `timeout` from now. A timeout too long
    /// for the clock to represent means no deadline.
    pub fn timeout(self, timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.deadline(deadline),
            None => self,
        }
    }

    /// Input bytes (keys and values), what queue bounds count.
    pub(super) fn bytes(&self) -> u64 {
        self.key_rows() * std::mem::size_of::<K>() as u64 + self.values.words().len() as u64 * 4
    }

    /// Rows of the keys (of the index, where the request has one).
    fn key_rows(&self) -> u64 {
        match (&self.present_groups, &self.index) {
            (Some(groups), _) => groups.words().len() as u64,
            (None, Some(ix)) => ix.rows() as u64,
            (None, None) => self.keys.len() as u64,
        }
    }

    /// Checks the request (the errors of `reduce_by_key`) and plans its
    /// keys, on the calling (submitting) thread.
    pub(super) fn plan(&self, slot: Arc<Slot<Grouped<K>>>, lane: Lane) -> Result<KeyedEntry> {
        if let Some(e) = &self.refused {
            return Err(e.clone());
        }
        if let (Some(index), None) = (&self.index, &self.present_groups) {
            index.check(self.rows as usize, &self.ops)?;
        }
        check_request(self.key_rows(), self.rows, &self.ops)?;
        let planned = match (&self.index, &self.present_groups) {
            (Some(index), Some(groups)) => gathered(index, groups.clone()),
            (Some(index), None) => indexed(index),
            (None, _) => plan_keys(&self.keys).map(|p| planned(&self.keys, p))?,
        };
        let (by, groups, names) = planned;
        // Dense int64 keys are read as two words; ids are one.
        let key_words = match &by {
            Groups::Keys { wide: true, .. } => 2,
            _ => 1,
        };
        Ok(KeyedEntry {
            values: self.values.clone(),
            dtype: self.dtype,
            limbs: limbs_for(
                self.dtype,
                Words::Host(self.values.words()),
                wanted(&self.ops).sum,
            ),
            rows: self.rows,
            by,
            groups,
            null_groups: self.null_keys.len() as u64,
            wanted: wanted(&self.ops),
            finish: finish_on_device(&self.ops),
            row_bytes: (self.dtype.words() + key_words) * 4,
            bytes: self.bytes(),
            deadline: self.deadline,
            enqueued: Instant::now(),
            slot: slot.clone(),
            target: Arc::new(Target {
                slot,
                names,
                ops: self.ops.clone(),
                nan: self.nan,
                null_keys: self.null_keys.clone(),
            }),
            settle_on_drop: lane == Lane::RealTime,
            encoded: None,
        })
    }
}

/// How a request's rows are grouped: where each row's group comes from,
/// the number of groups, and how they are named.
type Planned<K> = (Groups, u64, Names<K>);

/// The grouping of `keys` by their plan.
fn planned<K: Key>(keys: &Arc<[K]>, plan: KeyPlan<K>) -> Planned<K> {
    match plan {
        KeyPlan::Dense { min, groups } => (
            Groups::Keys {
                keys: Arc::new(keys.clone()),
                wide: K::WORDS == 2,
                base: min.to_i128() as u64,
            },
            groups,
            Names::Dense(min),
        ),
        KeyPlan::Sparse { ids, distinct } => (
            Groups::Ids(Arc::new(Arc::<[u32]>::from(ids))),
            distinct.len() as u64,
            Names::Sparse(distinct.into()),
        ),
    }
}

/// The grouping of a group index's rows: its own words, shared.
fn indexed<K: Key>(index: &Arc<GroupIndex<'static, K>>) -> Planned<K> {
    let words: Arc<dyn HostWords> = Arc::new(IndexWords(index.clone()));
    match index.dense() {
        Some((min, groups)) => (
            Groups::Keys {
                keys: words,
                wide: K::WORDS == 2,
                base: min.to_i128() as u64,
            },
            groups,
            Names::Dense(min),
        ),
        None => (
            Groups::Ids(words),
            index.len() as u64,
            Names::Sparse(index.shared_keys()),
        ),
    }
}

/// The grouping of rows gathered by a group index: `groups` holds each
/// row's group as the index numbers them (dense: key - min, one word).
fn gathered<K: Key>(index: &GroupIndex<'static, K>, groups: Arc<dyn HostWords>) -> Planned<K> {
    match index.dense() {
        Some((min, n)) => (
            Groups::Keys {
                keys: groups,
                wide: false,
                base: 0,
            },
            n,
            Names::Dense(min),
        ),
        None => (
            Groups::Ids(groups),
            index.len() as u64,
            Names::Sparse(index.shared_keys()),
        ),
    }
}

/// A group index's words for each row's group, as a request holds them.
struct IndexWords<K: Key>(Arc<GroupIndex<'static, K>>);

impl<K: Key> HostWords for IndexWords<K> {
    fn words(&self) -> &[u32] {
        self.0.group_words()
    }
}

/// Where each row's group comes from, owned (see `KeyPlan`).
enum Groups {
    /// Dense keys, read as they are: group = key - base.
    Keys {
        keys: Arc<dyn HostWords>,
        wide: bool,
        base: u64,
    },
    /// Sparse keys, through their ids (ascending in key order).
    Ids(Arc<dyn HostWords>),
}

/// A keyed request, checked and planned, as the queues hold it (the key
/// type lives on only in its `target`).
pub(super) struct KeyedEntry {
    values: Arc<dyn HostWords>,
    dtype: Dtype,
    /// The accumulators' layout, from the values' spread (scanned on the
    /// submitting thread, not the scheduler's).
    limbs: Limbs,
    rows: u64,
    by: Groups,
    groups: u64,
    /// Groups of keys whose values are all null, added to the result.
    null_groups: u64,
    wanted: Wanted,
    /// Groups are finished on the device (means too where asked for).
    finish: Finish,
    /// Bytes of one row's value and group words.
    row_bytes: u64,
    /// Input bytes (keys and values), what queue bounds count.
    pub bytes: u64,
    pub deadline: Option<Instant>,
    pub enqueued: Instant,
    pub slot: Arc<dyn AnySlot>,
    target: Arc<dyn Deliver>,
    /// Real-time: see `Drop`.
    settle_on_drop: bool,
    /// Real-time: the request's commands, recorded on the submitting
    /// thread (see [`KeyedEntry::encode_now`]).
    encoded: Option<Result<Encoded>>,
}

impl Drop for KeyedEntry {
    /// A real-time request dropped without an answer fails with
    /// [`Error::Shutdown`] instead of leaving its handle waiting forever
    /// (as `RtEntry` does). A batch job's entry is dropped after its last
    /// step, before its result is read, so it does not.
    fn drop(&mut self) {
        if self.settle_on_drop
            && let Some(w) = self.slot.settle_err(Error::Shutdown)
        {
            w.wake();
        }
    }
}

impl KeyedEntry {
    /// Uploads a real-time request's rows and records its commands now, on
    /// the calling thread (the submitter's), in error scopes of its own:
    /// the dispatcher then only submits them. Recording builds the
    /// pipelines of a kind of request not seen before (a first float64
    /// request's took about 100 ms on lavapipe), which on the dispatcher
    /// would hold every real-time request queued behind it. A failure is
    /// kept, to fail the request through its handle when it is reached.
    pub(super) fn encode_now(&mut self, sh: &Shared) {
        if self.is_empty() {
            return;
        }
        let scope = ErrorScopes::push(&sh.ctx);
        let encoded = encode_all(sh, self);
        // Popped whatever happened, so the scopes stay balanced.
        let checked = scope.check();
        self.encoded = Some(encoded.and_then(|e| checked.map(|()| e)));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.groups == 0
    }

    fn values(&self) -> Words<'_> {
        Words::Host(self.values.words())
    }

    fn row_groups(&self) -> RowGroups<'_> {
        match &self.by {
            Groups::Keys {
                keys,
                wide: true,
                base,
            } => RowGroups::Keys64 {
                keys: Words::Host(keys.words()),
                base: *base,
            },
            Groups::Keys { keys, base, .. } => RowGroups::Keys32 {
                keys: Words::Host(keys.words()),
                base: *base as u32,
            },
            Groups::Ids(ids) => RowGroups::Keys32 {
                keys: Words::Host(ids.words()),
                base: 0,
            },
        }
    }

    fn shape(&self, sh: &Shared) -> PassShape {
        PassShape::new(
            &sh.ctx,
            self.dtype,
            |_| self.limbs,
            &self.row_groups(),
            self.wanted,
        )
    }

    /// What completes the request, to hand to readback callbacks.
    fn finisher(&self) -> Finisher {
        Finisher {
            target: self.target.clone(),
            done: Done {
                enqueued: self.enqueued,
                bytes: self.bytes,
                deadline: self.deadline,
            },
            groups: self.groups + self.null_groups,
        }
    }

    /// Completes the request with `outcome` (see [`Finisher::finish`]).
    pub(super) fn finish(&self, sh: &Arc<Shared>, lane: Lane, outcome: Outcome) {
        self.finisher().finish(sh, lane, outcome, ());
    }

    /// Restarts the latency clock: the job has entered the queue.
    pub(super) fn mark_enqueued(&mut self) {
        self.enqueued = Instant::now();
    }
}

/// The finished records of every window of a request, in group order, or
/// why they could not be read.
pub(super) type Outcome = Result<Vec<(u64, GroupAccumulators<'static>)>>;

/// How a request's keys are named in its result.
enum Names<K> {
    /// group g is key `min + g`.
    Dense(K),
    /// group g is key `distinct[g]`.
    Sparse(Arc<[K]>),
}

/// The typed end of a keyed request: its handle's slot and what turns
/// finished records into its [`Grouped`].
struct Target<K: Key> {
    slot: Arc<Slot<Grouped<K>>>,
    names: Names<K>,
    ops: Vec<Op>,
    nan: NanPolicy,
    null_keys: Arc<[K]>,
}

impl<K: Key> Target<K> {
    fn build(&self, windows: Vec<(u64, GroupAccumulators<'_>)>) -> Result<Grouped<K>> {
        let mut out = Grouped::empty(&self.ops);
        for (g0, acc) in &windows {
            let names = match &self.names {
                Names::Dense(min) => WindowKeys::Dense { min: *min, g0: *g0 },
                Names::Sparse(distinct) => WindowKeys::Sparse { distinct, g0: *g0 },
            };
            finish_window(&mut out, acc, names, self.nan)?;
        }
        Ok(out.with_null_groups(&self.null_keys))
    }
}

/// What latency and metrics need of a request once it completes.
#[derive(Clone, Copy)]
struct Done {
    enqueued: Instant,
    bytes: u64,
    deadline: Option<Instant>,
}

/// Completes a keyed request's handle: typed by its keys, reached through
/// the untyped entry.
trait Deliver: Send + Sync {
    fn deliver(&self, sh: &Shared, lane: Lane, done: Done, outcome: Outcome);
}

impl<K: Key> Deliver for Target<K> {
    /// Builds the result (a late one is not built where late results are
    /// rejected) and settles the handle, counting it in the lane's metrics
    /// as a real-time request's result is counted.
    fn deliver(&self, sh: &Shared, lane: Lane, done: Done, outcome: Outcome) {
        let now = Instant::now();
        let late = done.deadline.filter(|&d| now > d);
        let result = match (outcome, late) {
            (Ok(_), Some(d)) if sh.cfg.reject_late => {
                Err(Error::DeadlineExceeded { late_by: now - d })
            }
            (outcome, _) => outcome.and_then(|windows| self.build(windows)),
        };
        let now = Instant::now();
        let ok = result.is_ok();
        let missed = match &result {
            Ok(_) => late.is_some(),
            Err(e) => matches!(e, Error::DeadlineExceeded { .. }),
        };
        // Counted only when this completes the request (one cancelled
        // meanwhile counts as cancelled alone); metrics before the wake-up,
        // which waits until the lock is gone.
        let mut m = lock(&sh.metrics);
        let metrics = match lane {
            Lane::RealTime => &mut m.rt,
            Lane::Batch => &mut m.batch,
        };
        let wakeup = self.slot.settle(result);
        if wakeup.is_some() {
            if ok {
                metrics.on_done(now - done.enqueued, done.bytes, now);
            } else {
                metrics.failed += 1;
            }
            metrics.deadline_misses += u64::from(missed);
        }
        drop(m);
        if let Some(w) = wakeup {
            w.wake();
        }
    }
}

/// Completes a keyed request from a readback callback.
struct Finisher {
    target: Arc<dyn Deliver>,
    done: Done,
    groups: u64,
}

impl Finisher {
    /// Settles the request with `outcome`, then drops `guard` (what must
    /// live until the request is settled). Many groups are finished on a
    /// thread of their own (see [`FINISH_APART`]); where none can be
    /// started, here.
    fn finish(self, sh: &Arc<Shared>, lane: Lane, outcome: Outcome, guard: impl Send + 'static) {
        if self.groups <= FINISH_APART || outcome.is_err() {
            self.target.deliver(sh, lane, self.done, outcome);
            drop(guard);
            return;
        }
        // Handed over through a lock, so that it stays here should the
        // thread not start.
        let work = Arc::new(Mutex::new(Some((self, outcome, guard))));
        let (sh2, work2) = (sh.clone(), work.clone());
        let spawned = std::thread::Builder::new()
            .name("gpulanes-keyed-finish".into())
            .spawn(move || {
                let taken = lock(&work2).take();
                if let Some((f, outcome, guard)) = taken {
                    f.target.deliver(&sh2, lane, f.done, outcome);
                    drop(guard);
                }
            });
        if spawned.is_err() {
            let taken = lock(&work).take();
            if let Some((f, outcome, guard)) = taken {
                f.target.deliver(sh, lane, f.done, outcome);
                drop(guard);
            }
        }
    }
}

/// A request's windows read back so far, until the last one is in.
struct Gather {
    windows: Vec<(u64, GroupAccumulators<'static>)>,
    left: usize,
    failed: bool,
}

impl Gather {
    fn new(windows: usize) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Gather {
            windows: Vec::with_capacity(windows),
            left: windows,
            failed: false,
        }))
    }

    /// Adds window `g0`'s records (or the error reading them); returns
    /// the outcome once every window is in, or at the first error.
    fn put(&mut self, g0: u64, read: Result<GroupAccumulators<'static>>) -> Option<Outcome> {
        if self.failed {
            return None;
        }
        match read {
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
            Ok(acc) => {
                self.windows.push((g0, acc));
                self.left -= 1;
                if self.left > 0 {
                    return None;
                }
                self.windows.sort_unstable_by_key(|&(g0, _)| g0);
                Some(Ok(std::mem::take(&mut self.windows)))
            }
        }
    }
}

/// Maps a window's readback (its submission made) and hands its
/// records to `then`; the window's buffers stay alive until then.
fn read_window(
    window: WindowBuffers,
    g0: u64,
    then: impl FnOnce(u64, Result<GroupAccumulators<'static>>) + Send + 'static,
) {
    let buffer: wgpu::Buffer = (*window.readback).clone();
    let (dtype, limbs, finish) = (window.dtype, window.limbs, window.finish);
    map_read(
        &buffer,
        window.read_bytes,
        "finished groups",
        move |view| {
            view.map(|b| {
                let words = bytemuck::cast_slice::<u8, u32>(b).to_vec();
                GroupAccumulators::read_back(dtype, limbs, finish, words)
            })
        },
        move |read| {
            drop(window);
            then(g0, read);
        },
    );
}

/// Device buffers a submission reads, kept until it is done.
type Keep = (Vec<Chunk>, Vec<PooledBuffer>);

/// One real-time keyed request: one submission of its own.
pub(super) fn run_keyed_realtime(sh: &Arc<Shared>, mut entry: KeyedEntry) {
    let lane = Lane::RealTime;
    // A lost device: the request fails without touching it.
    if let Err(lost) = sh.ctx.health.check() {
        entry.finish(sh, lane, Err(lost));
        release_slot(sh, lane, Duration::ZERO);
        return;
    }
    // Past its deadline already: not run where late results are rejected.
    let now = Instant::now();
    if let Some(d) = entry.deadline.filter(|&d| sh.cfg.reject_late && d <= now) {
        entry.finish(sh, lane, Err(Error::DeadlineExceeded { late_by: now - d }));
        release_slot(sh, lane, Duration::ZERO);
        return;
    }
    if entry.is_empty() {
        entry.finish(sh, lane, Ok(Vec::new()));
        release_slot(sh, lane, Duration::ZERO);
        return;
    }
    let ctx = &sh.ctx;
    let scope = ErrorScopes::push(ctx);
    let encoded = match entry.encoded.take() {
        Some(encoded) => encoded,
        None => encode_all(sh, &entry),
    };
    let Encoded {
        commands,
        windows,
        keep,
        pass_bytes,
    } = match encoded {
        Ok(encoded) => encoded,
        Err(e) => {
            // Popped whatever happened, so the scopes stay balanced.
            let _ = scope.check();
            entry.finish(sh, lane, Err(e));
            release_slot(sh, lane, Duration::ZERO);
            return;
        }
    };
    let index = ctx.queue.submit([commands]);
    let submitted = Instant::now();
    if let Err(e) = scope.check() {
        entry.finish(sh, lane, Err(e));
        release_slot(sh, lane, Duration::ZERO);
        return;
    }
    let busy = sh.rt_fixed.saturating_add(busy_at(
        pass_bytes,
        lock(&sh.keyed_throughput).bytes_per_s(),
    ));
    lock(&sh.state).pred.predict(submitted, busy);
    lock(&sh.metrics).rt.on_submit(entry.bytes, submitted);
    let gather = Gather::new(windows.len());
    // Shared by the readbacks: the request fails (see `KeyedEntry`'s
    // `Drop`) should they all be dropped uncalled.
    let entry = Arc::new(entry);
    let keep = Arc::new(keep);
    for (g0, window) in windows {
        let (sh2, entry, gather, keep) = (sh.clone(), entry.clone(), gather.clone(), keep.clone());
        read_window(window, g0, move |g0, read| {
            let outcome = lock(&gather).put(g0, read);
            if let Some(outcome) = outcome {
                drop(keep);
                entry.finisher().finish(&sh2, lane, outcome, entry);
                if sh2.timer.is_none() {
                    mark_done(&sh2, submitted);
                }
                release_slot(&sh2, lane, busy);
            }
        });
    }
    track(sh, index, None);
}

/// A real-time keyed request, encoded.
struct Encoded {
    commands: wgpu::CommandBuffer,
    /// Each window's first group and buffers.
    windows: Vec<(u64, WindowBuffers)>,
    keep: Keep,
    /// Bytes the passes read in all, as a keyed batch step counts them
    /// (its rows' bytes, once per window and phase), to predict its GPU
    /// time at the keyed throughput.
    pass_bytes: u64,
}

/// Uploads a real-time request's rows and encodes every window of its
/// groups: cleared, every phase over every chunk of rows, copied out.
fn encode_all(sh: &Shared, entry: &KeyedEntry) -> Result<Encoded> {
    let ctx = &sh.ctx;
    let by = entry.row_groups();
    let shape = entry.shape(sh);
    let chunks = make_chunks(
        ctx,
        entry.values(),
        entry.dtype.words(),
        by,
        0..entry.rows,
        shape.chunk_rows,
        shape.align,
        Staging::Queue,
    )?;
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes keyed real-time"),
        });
    let mut windows = Vec::new();
    let mut params = Vec::new();
    let mut g0 = 0;
    while g0 < entry.groups {
        let count = shape.window.min(entry.groups - g0);
        let window = WindowBuffers::new(ctx, entry.dtype, shape.limbs, count, entry.finish);
        window.encode_clear(&mut encoder);
        // Every chunk's high words before any chunk's low words.
        for phase in 0..shape.phases {
            params.extend(encode_window_phase(
                ctx,
                &mut encoder,
                entry.dtype,
                &by,
                entry.wanted,
                &chunks,
                g0,
                count,
                phase,
                shape.direct,
                &window,
            ));
        }
        params.extend(window.encode_read(ctx, &mut encoder, entry.wanted));
        windows.push((g0, window));
        g0 += count;
    }
    let passes = windows.len() as u64 * u64::from(shape.phases);
    Ok(Encoded {
        commands: encoder.finish(),
        windows,
        keep: (chunks, params),
        pass_bytes: (entry.rows * entry.row_bytes).saturating_mul(passes),
    })
}

/// A keyed batch job, submitted a step at a time: for each window of
/// groups, for each phase, each range of rows in turn.
pub(super) struct KeyedBatch {
    pub entry: KeyedEntry,
    shape: PassShape,
    /// Where the next step starts.
    at: Cursor,
    /// This job's throughput (input bytes a second of GPU time): the
    /// lanes' keyed estimate when it was planned, refined by its own steps
    /// (group passes run at rates that depend on the groups, the keys'
    /// order and the dtype, far from a plain reduction's).
    rate: Arc<Mutex<Throughput>>,
    /// Steps submitted with GPU timestamps so far.
    timed_steps: u32,
    /// The accumulators of the window being filled.
    window: Option<WindowBuffers>,
    gather: Arc<Mutex<Gather>>,
}

/// A position in a keyed batch job: a window, a phase and a row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cursor {
    /// The window's first group.
    g0: u64,
    phase: u32,
    row: u64,
}

/// One step of a keyed batch job.
#[derive(Debug, PartialEq, Eq)]
struct Step {
    g0: u64,
    count: u64,
    phase: u32,
    rows: Range<u64>,
    /// The window's first step (its accumulators are cleared) and last
    /// (they are read back after it).
    first: bool,
    last: bool,
}

/// Steps through `rows` rows of `groups` groups in windows of `window`
/// groups and `phases` phases, `step_rows` rows at a time from `at`
/// (`step_rows` at least 1); `None` when nothing is left.
fn step_at(
    at: Cursor,
    rows: u64,
    groups: u64,
    window: u64,
    phases: u32,
    step_rows: u64,
) -> Option<Step> {
    if at.g0 >= groups || rows == 0 {
        return None;
    }
    let end = at.row.saturating_add(step_rows).min(rows);
    Some(Step {
        g0: at.g0,
        count: window.min(groups - at.g0),
        phase: at.phase,
        rows: at.row..end,
        first: at.phase == 0 && at.row == 0,
        last: at.phase + 1 == phases && end == rows,
    })
}

/// Rows of a step that should read `bytes` (at least one alignment's
/// worth; `row_bytes` a row), within `units` (least and most chunk units of
/// `rows_per_unit` rows each), a multiple of `align` (at least 1).
fn rows_for(bytes: f64, row_bytes: u64, rows_per_unit: u64, units: (u64, u64), align: u64) -> u64 {
    let min_rows = units.0.saturating_mul(rows_per_unit).max(1);
    let max_rows = units.1.saturating_mul(rows_per_unit).max(min_rows);
    // A NaN rate casts to 0 and an infinite one to u64::MAX: both clamped.
    let rows = ((bytes / row_bytes.max(1) as f64) as u64).clamp(min_rows, max_rows);
    (rows / align * align).max(align)
}

/// Where the step after `step` starts.
fn after(step: &Step, rows: u64, phases: u32) -> Cursor {
    if step.rows.end < rows {
        Cursor {
            g0: step.g0,
            phase: step.phase,
            row: step.rows.end,
        }
    } else if step.phase + 1 < phases {
        Cursor {
            g0: step.g0,
            phase: step.phase + 1,
            row: 0,
        }
    } else {
        Cursor {
            g0: step.g0 + step.count,
            phase: 0,
            row: 0,
        }
    }
}

impl KeyedBatch {
    /// Plans `entry`'s steps and builds the pipelines they will record
    /// (in error scopes of its own: a build the device refuses fails the
    /// submission). This runs on the submitting thread: on the dispatcher,
    /// a job of a kind not seen before would hold every real-time request
    /// behind its pipelines' builds (about 100 ms on a CPU driver).
    pub fn new(sh: &Shared, entry: KeyedEntry) -> Result<Self> {
        let shape = entry.shape(sh);
        if entry.rows > 0 && entry.groups > 0 {
            let scope = ErrorScopes::push(&sh.ctx);
            build_pass_pipelines(
                &sh.ctx,
                entry.dtype,
                &entry.row_groups(),
                entry.wanted,
                entry.finish,
                &shape,
                entry.groups,
            );
            scope.check()?;
        }
        let windows = entry.groups.div_ceil(shape.window) as usize;
        Ok(KeyedBatch {
            entry,
            shape,
            at: Cursor::default(),
            rate: Arc::new(Mutex::new(lock(&sh.keyed_throughput).fresh())),
            timed_steps: 0,
            window: None,
            gather: Gather::new(windows),
        })
    }

    /// Rows of the next step: a batch chunk's share of the quantum (as
    /// `batch` sizes its chunks) at this job's throughput, within the
    /// configured chunk bounds (units of 8192 floats of values, each row's
    /// key besides), a multiple of the shape's alignment. Each step also
    /// has costs its rows do not (a submission, bindings, the private
    /// accumulators' flush: about half a millisecond on a CPU driver), so
    /// where the quantum is shorter than those the bounds decide.
    fn step_rows(&self, sh: &Shared) -> u64 {
        let chunk_time = sh.quantum.saturating_sub(sh.lead).max(sh.quantum / 2);
        rows_for(
            lock(&self.rate).bytes_for(chunk_time),
            self.entry.row_bytes,
            BLOCK / self.entry.dtype.words(),
            (sh.cfg.min_chunk_units, sh.cfg.max_chunk_units),
            self.shape.align,
        )
    }

    fn next_step(&self, sh: &Shared) -> Option<Step> {
        step_at(
            self.at,
            self.entry.rows,
            self.entry.groups,
            self.shape.window,
            self.shape.phases,
            self.step_rows(sh),
        )
    }

    fn fail(&self, sh: &Arc<Shared>, e: Error) {
        self.entry.finish(sh, Lane::Batch, Err(e));
    }
}

/// Submits the next step of a keyed batch job; returns the job if
/// unfinished.
pub(super) fn run_keyed_step(sh: &Arc<Shared>, mut job: KeyedBatch) -> Option<KeyedBatch> {
    if job.entry.slot.is_settled() {
        return None; // cancelled (or failed): stop here, buffers are released
    }
    // A lost device: the job fails without touching it.
    if let Err(lost) = sh.ctx.health.check() {
        job.fail(sh, lost);
        return None;
    }
    let Some(step) = job.next_step(sh) else {
        // No rows, no groups: the result is ready now.
        job.entry.finish(sh, Lane::Batch, Ok(Vec::new()));
        return None;
    };
    let ctx = &sh.ctx;
    let dtype = job.entry.dtype;
    let scope = ErrorScopes::push(ctx);
    if step.first {
        job.window = Some(WindowBuffers::new(
            ctx,
            dtype,
            job.shape.limbs,
            step.count,
            job.entry.finish,
        ));
    }
    let by = job.entry.row_groups();
    // This step's rows only, uploaded right before they are read.
    let chunks = match make_chunks(
        ctx,
        job.entry.values(),
        dtype.words(),
        by,
        step.rows.clone(),
        job.shape.chunk_rows,
        job.shape.align,
        Staging::Queue,
    ) {
        Ok(chunks) => chunks,
        Err(e) => {
            let _ = scope.check();
            job.fail(sh, e);
            return None;
        }
    };
    let Some(window) = job.window.as_ref() else {
        let _ = scope.check();
        job.fail(
            sh,
            Error::Internal("a keyed batch step found no accumulators".into()),
        );
        return None;
    };
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes keyed batch step"),
        });
    if step.first {
        window.encode_clear(&mut encoder);
    }
    // The group passes' GPU time, from timestamps around them where the
    // device has them: each of a job's first steps until one has been
    // observed (at most COLD_TIMED_STEPS: a pass too short to observe, or
    // unusable timestamps, would otherwise time every step), then as batch
    // chunks are.
    let cold = job.timed_steps < COLD_TIMED_STEPS && !lock(&job.rate).is_observed();
    let timed = claim_batch_timer(sh, cold);
    job.timed_steps += u32::from(timed.is_some());
    if let Some(t) = &timed {
        t.begin(&mut encoder);
    }
    let mut params = encode_window_phase(
        ctx,
        &mut encoder,
        dtype,
        &by,
        job.entry.wanted,
        &chunks,
        step.g0,
        step.count,
        step.phase,
        job.shape.direct,
        window,
    );
    if let Some(t) = &timed {
        t.end(&mut encoder);
    }
    if step.last {
        params.extend(window.encode_read(ctx, &mut encoder, job.entry.wanted));
    }
    let index = ctx.queue.submit([encoder.finish()]);
    let submitted = Instant::now();
    if let Err(e) = scope.check() {
        job.fail(sh, e);
        return None;
    }
    let step_bytes = (step.rows.end - step.rows.start) * job.entry.row_bytes;
    let predicted = busy_at(step_bytes, lock(&job.rate).bytes_per_s());
    {
        let mut st = lock(&sh.state);
        st.batch_in_flight += 1;
        st.pred.predict(submitted, predicted);
    }
    lock(&sh.metrics).batch.on_submit(step_bytes, submitted);
    // The step's GPU time refines this job's rate and the lanes' keyed
    // estimate (the next job's start); it says nothing of the plain
    // reduction's throughput, which is left alone. The GPU's last
    // completion is still noted, so the next chunk's busy time does not
    // include this one.
    let observe = {
        let (sh, rate) = (sh.clone(), job.rate.clone());
        move |busy: Duration, timed: bool| {
            lock(&rate).observe(step_bytes, busy, timed);
            lock(&sh.keyed_throughput).observe(step_bytes, busy, timed);
        }
    };
    let wall_clock_observation = sh.timer.is_none();
    if let Some(t) = timed {
        let observe = observe.clone();
        read_gpu_time(t, move |d| observe(d, true));
    }
    let sh2 = sh.clone();
    let keep: Keep = (chunks, params);
    let on_done = Box::new(move || {
        drop(keep);
        if wall_clock_observation {
            observe(mark_done(&sh2, submitted), false);
        }
        release_slot(&sh2, Lane::Batch, predicted);
    });
    if step.last
        && let Some(window) = job.window.take()
    {
        let (sh3, gather, finisher) = (sh.clone(), job.gather.clone(), job.entry.finisher());
        read_window(window, step.g0, move |g0, read| {
            let outcome = lock(&gather).put(g0, read);
            if let Some(outcome) = outcome {
                finisher.finish(&sh3, Lane::Batch, outcome, ());
            }
        });
    }
    job.at = after(&step, job.entry.rows, job.shape.phases);
    track(sh, index, Some(on_done));
    let finished = step_at(
        job.at,
        job.entry.rows,
        job.entry.groups,
        job.shape.window,
        job.shape.phases,
        1,
    )
    .is_none();
    (!finished).then_some(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (window, phase) visits every row once, in order, whatever the
    /// step sizes, with `first` and `last` on each window's first and last
    /// step.
    #[test]
    fn steps_cover_every_row_of_every_window_and_phase_once() {
        for (rows, groups, window, phases) in [
            (10, 3, 3, 1),
            (10, 7, 3, 2),
            (1, 1, 1, 1),
            (100, 5, 2, 2),
            (7, 9, 4, 1),
        ] {
            for sizes in [vec![1u64], vec![3], vec![1000], vec![2, 5, 1, 9]] {
                let mut at = Cursor::default();
                let mut seen = Vec::new();
                let mut i = 0;
                while let Some(step) =
                    step_at(at, rows, groups, window, phases, sizes[i % sizes.len()])
                {
                    seen.push((
                        step.g0,
                        step.phase,
                        step.rows.clone(),
                        step.first,
                        step.last,
                    ));
                    at = after(&step, rows, phases);
                    i += 1;
                    assert!(i < 10_000, "no progress");
                }
                let mut want = Vec::new();
                for g0 in (0..groups).step_by(window as usize) {
                    for phase in 0..phases {
                        let covered: Vec<_> =
                            seen.iter().filter(|s| s.0 == g0 && s.1 == phase).collect();
                        let mut next = 0;
                        for (k, s) in covered.iter().enumerate() {
                            assert_eq!(s.2.start, next, "{rows} {groups} {window} {phases}");
                            assert!(s.2.end > s.2.start);
                            next = s.2.end;
                            assert_eq!(s.3, phase == 0 && k == 0);
                            assert_eq!(s.4, phase + 1 == phases && k + 1 == covered.len());
                        }
                        assert_eq!(next, rows);
                        want.push((g0, phase));
                    }
                }
                let mut visited: Vec<_> = seen.iter().map(|s| (s.0, s.1)).collect();
                visited.dedup();
                assert_eq!(visited, want, "windows and phases in order");
            }
        }
        assert!(step_at(Cursor::default(), 0, 3, 3, 1, 5).is_none());
        assert!(step_at(Cursor::default(), 5, 0, 3, 1, 5).is_none());
    }

    /// Step rows follow the bytes wanted, within the unit bounds, aligned,
    /// whatever the rate (zero, NaN, infinite, huge bounds).
    #[test]
    fn step_rows_follow_the_rate_within_the_bounds() {
        // 8-byte rows, 8192 rows a unit, 1..=4 units, aligned to 16.
        let rows = |bytes| rows_for(bytes, 8, 8192, (1, 4), 16);
        assert_eq!(rows(8.0 * 10_000.0), 10_000);
        assert_eq!(rows(8.0 * 10_007.0), 10_000, "aligned down");
        assert_eq!(rows(1.0), 8192, "at least one unit");
        assert_eq!(rows(0.0), 8192);
        assert_eq!(rows(f64::NAN), 8192);
        assert_eq!(rows(f64::INFINITY), 4 * 8192, "at most four units");
        assert_eq!(rows(1e300), 4 * 8192);
        // Bounds past u64 saturate; alignment above the bounds wins.
        assert_eq!(
            rows_for(f64::INFINITY, 12, 4096, (1, u64::MAX), 16),
            u64::MAX / 16 * 16
        );
        assert_eq!(rows_for(1.0, 8, 1, (1, 1), 64), 64);
        assert_eq!(rows_for(1.0, 0, 1, (0, 0), 1), 1);
    }
}
