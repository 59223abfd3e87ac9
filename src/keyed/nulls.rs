//! Keyed reductions over values with nulls (a [`Validity`] bitmap: SQL
//! NULL, as an Arrow column's null buffer marks it).
//!
//! The rule is SQL's `GROUP BY`: a null value is skipped and not counted,
//! but its key still names a group, so a key whose values are all null is
//! in the result with `count` 0 and no value (`None`) for `sum`, `mean`,
//! `max` and `min`, where `SUM(v)` is NULL and `COUNT(v)` is 0. Such a
//! group's state is empty ([`State::is_empty`]), which is how merged keyed
//! states tell it apart from a group whose values are all NaN (counted
//! under `Propagate`, skipped under `Ignore`: a NaN is a value).
//!
//! How: the rows with a value are gathered into new key and value columns
//! on the host's threads (the kernels read no bitmap) and reduced as any
//! keyed input; the distinct keys of the null rows that the result lacks
//! are merged in afterwards. Without nulls the engine's calls copy
//! nothing; a lanes request holds a copy of its rows either way.

use crate::dtype::{Dtype, Element, Scalar};
use crate::error::{Error, Result};
use crate::op::{Op, Reduction};
use crate::state::{State, StateKind};
use crate::threads;
use crate::validity::Validity;

use super::{Grouped, GroupedStates, Key};

/// Rows a thread gathers at least.
const PARALLEL_ROWS: usize = 1 << 18;

/// The rows of a keyed input that hold a value, and the keys of the rest.
pub(crate) struct Present<K, E> {
    /// Keys of the rows with a value, in row order.
    pub keys: Vec<K>,
    /// Their values.
    pub values: Vec<E>,
    /// The distinct keys of the null rows, ascending.
    pub null_keys: Vec<K>,
}

/// Checks that `valid` describes one value a row.
pub(crate) fn check_validity(rows: usize, valid: &Validity<'_>) -> Result<()> {
    if valid.len() != rows {
        return Err(Error::InvalidInput(format!(
            "the validity bitmap describes {} values, the input has {rows}",
            valid.len()
        )));
    }
    Ok(())
}

/// Splits the rows of `keys` and `values` (of one length, as `valid`) by
/// `valid`, one range of rows a thread.
pub(crate) fn split<K: Key, E: Element>(
    keys: &[K],
    values: &[E],
    valid: &Validity<'_>,
) -> Result<Present<K, E>> {
    let rows = keys.len();
    let ranges = threads::ranges(rows, threads::threads_for(rows, PARALLEL_ROWS));
    let kept: Vec<usize> = ranges.iter().map(|r| valid.valid_in(r.clone())).collect();
    let total: usize = kept.iter().sum();
    let nulls: Vec<usize> = ranges.iter().zip(&kept).map(|(r, k)| r.len() - k).collect();
    let mut out_keys = vec![K::zeroed(); total];
    let mut out_values = vec![E::zeroed(); total];
    let mut null_keys = vec![K::zeroed(); rows - total];
    let parts: Vec<_> = ranges
        .into_iter()
        .zip(threads::split_into(&mut out_keys, kept.iter().copied()))
        .zip(threads::split_into(&mut out_values, kept.iter().copied()))
        .zip(threads::split_into(&mut null_keys, nulls.iter().copied()))
        .map(|(((r, k), v), n)| (r, k, v, n))
        .collect();
    let distinct = threads::on_threads(parts, |(rows, k, v, n)| {
        let (mut at, mut null_at) = (0, 0);
        for row in rows {
            if valid.is_valid(row) {
                k[at] = keys[row];
                v[at] = values[row];
                at += 1;
            } else {
                n[null_at] = keys[row];
                null_at += 1;
            }
        }
        // The range's distinct null keys, ascending.
        n.sort_unstable();
        n.chunk_by(|a, b| a == b)
            .map(|run| run[0])
            .collect::<Vec<K>>()
    });
    let mut null_distinct = Vec::new();
    for d in distinct {
        null_distinct
            .extend(d.ok_or_else(|| Error::Internal("a thread gathering rows panicked".into()))?);
    }
    null_distinct.sort_unstable();
    null_distinct.dedup();
    Ok(Present {
        keys: out_keys,
        values: out_values,
        null_keys: null_distinct,
    })
}

/// Where the keys of `extra` (ascending) that `keys` (ascending) lacks go:
/// for each, the number of `keys` before it, ascending.
pub(crate) fn insertions<K: Ord>(keys: &[K], extra: &[K]) -> Vec<(usize, usize)> {
    let mut at = 0;
    let mut out = Vec::new();
    for (i, k) in extra.iter().enumerate() {
        at += keys[at..].partition_point(|x| x < k);
        if keys.get(at) != Some(k) {
            out.push((at, i));
        }
    }
    out
}

/// `items` with `make(j)` inserted before its element `at` for each
/// `(at, j)` of `insert` (ascending `at`).
pub(crate) fn merged<T>(
    items: Vec<T>,
    insert: &[(usize, usize)],
    make: impl Fn(usize) -> T,
) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len() + insert.len());
    let mut next = insert.iter().peekable();
    for (i, item) in items.into_iter().enumerate() {
        while let Some(&&(_, j)) = next.peek().filter(|(at, _)| *at == i) {
            out.push(make(j));
            next.next();
        }
        out.push(item);
    }
    out.extend(next.map(|&(_, j)| make(j)));
    out
}

/// The value an op gives for a group whose values are all null.
fn null_group_value(op: Op) -> Option<Scalar> {
    match op {
        Op::Count => Some(Scalar::I64(0)),
        _ => None,
    }
}

impl<K: Key> Grouped<K> {
    /// The result with a group for each key of `null_keys` (ascending) it
    /// lacks: the groups whose values are all null.
    pub(crate) fn with_null_groups(self, null_keys: &[K]) -> Self {
        let insert = insertions(&self.keys, null_keys);
        if insert.is_empty() {
            return self;
        }
        Grouped {
            keys: merged(self.keys, &insert, |j| null_keys[j]),
            reductions: self
                .reductions
                .into_iter()
                .map(|r| Reduction {
                    op: r.op,
                    values: merged(r.values, &insert, |_| null_group_value(r.op)),
                    counts: merged(r.counts, &insert, |_| 0),
                })
                .collect(),
        }
    }
}

impl<K: Key> GroupedStates<K> {
    /// The states with an empty state of `dtype` and `kind` for each key of
    /// `null_keys` (ascending) they lack.
    pub(crate) fn with_null_groups(self, null_keys: &[K], dtype: Dtype, kind: StateKind) -> Self {
        let insert = insertions(&self.keys, null_keys);
        if insert.is_empty() {
            return self;
        }
        let empty = State::empty(dtype, kind);
        GroupedStates {
            keys: merged(self.keys, &insert, |j| null_keys[j]),
            states: merged(self.states, &insert, |_| empty.clone()),
        }
    }
}

impl crate::Engine {
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key) where
    /// `valid` marks which values hold a value: the others are SQL NULL,
    /// skipped and not counted, while their keys still name groups. A key
    /// whose values are all null is in the result with `count` 0 and no
    /// value (`None`) for every other op, as SQL's `SUM(v)` is NULL and
    /// `COUNT(v)` 0 there. A null is not a NaN: NaN values follow `nan`.
    ///
    /// The rows with a value are gathered into new columns first (the
    /// kernels read no bitmap); without nulls the call is
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key) itself.
    ///
    /// ```
    /// use gpulanes::{NanPolicy, Op, Scalar, Validity};
    /// let engine = gpulanes::Engine::new()?;
    /// let keys = [7i64, 3, 7, 5];
    /// let values = [1.5f64, 0.0, 2.0, 0.0];
    /// let bits = Validity::pack([true, false, true, false]);
    /// let valid = Validity::new(&bits, 0, 4)?;
    /// let g = engine.reduce_by_key_with_nulls(&keys, &values, valid, &[Op::Sum, Op::Count], NanPolicy::Propagate)?;
    /// assert_eq!(g.keys, vec![3, 5, 7]);
    /// assert_eq!(g.reductions[0].values, vec![None, None, Some(Scalar::F64(3.5))]);
    /// assert_eq!(g.reductions[1].counts, vec![0, 0, 2]);
    /// # Ok::<(), gpulanes::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `valid` does not describe one value a
    /// row; otherwise as
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key).
    pub fn reduce_by_key_with_nulls<K: Key, E: Element>(
        &self,
        keys: &[K],
        values: &[E],
        valid: Validity<'_>,
        ops: &[Op],
        nan: crate::NanPolicy,
    ) -> Result<Grouped<K>> {
        super::check_request(keys.len() as u64, values.len() as u64, ops)?;
        check_validity(values.len(), &valid)?;
        if valid.null_count() == 0 {
            return self.reduce_by_key(keys, values, ops, nan);
        }
        let present = split(keys, values, &valid)?;
        Ok(self
            .reduce_by_key(&present.keys, &present.values, ops, nan)?
            .with_null_groups(&present.null_keys))
    }

    /// [`Engine::states_by_key`](crate::Engine::states_by_key) where
    /// `valid` marks which values hold a value: a key whose values are all
    /// null gets an empty state ([`State::is_empty`]), which finalises as
    /// [`Engine::reduce_by_key_with_nulls`](crate::Engine::reduce_by_key_with_nulls) gives such a group once the
    /// caller applies its rule (count 0, no other value); merged with
    /// states of other rows of the key it changes nothing.
    ///
    /// # Errors
    /// As [`Engine::reduce_by_key_with_nulls`](crate::Engine::reduce_by_key_with_nulls).
    pub fn states_by_key_with_nulls<K: Key, E: Element>(
        &self,
        keys: &[K],
        values: &[E],
        valid: Validity<'_>,
        kind: StateKind,
    ) -> Result<GroupedStates<K>> {
        super::check_request(keys.len() as u64, values.len() as u64, &[kind.op()])?;
        check_validity(values.len(), &valid)?;
        if valid.null_count() == 0 {
            return self.states_by_key(keys, values, kind);
        }
        let present = split(keys, values, &valid)?;
        Ok(self
            .states_by_key(&present.keys, &present.values, kind)?
            .with_null_groups(&present.null_keys, E::DTYPE, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::xorshift;

    #[test]
    fn rows_split_by_their_bits_in_row_order() {
        let mut next = xorshift(11);
        for rows in [0usize, 1, 9, 1000, (1 << 19) + 7] {
            for share in [0u64, 1, 3, 4] {
                // share/4 of the rows null.
                let keys: Vec<i64> = (0..rows).map(|_| (next() % 97) as i64 - 40).collect();
                let values: Vec<f32> = (0..rows).map(|i| i as f32).collect();
                let bools: Vec<bool> = (0..rows).map(|_| next() % 4 >= share).collect();
                let bits = Validity::pack(bools.iter().copied());
                let valid = Validity::new(&bits, 0, rows).unwrap();
                let p = split(&keys, &values, &valid).unwrap();
                let want: Vec<usize> = (0..rows).filter(|&i| bools[i]).collect();
                assert_eq!(p.keys, want.iter().map(|&i| keys[i]).collect::<Vec<_>>());
                assert_eq!(
                    p.values,
                    want.iter().map(|&i| values[i]).collect::<Vec<_>>()
                );
                let mut nk: Vec<i64> = (0..rows).filter(|&i| !bools[i]).map(|i| keys[i]).collect();
                nk.sort_unstable();
                nk.dedup();
                assert_eq!(p.null_keys, nk, "{rows} rows, {share}/4 null");
            }
        }
    }

    #[test]
    fn null_groups_are_inserted_in_key_order_once() {
        let g = Grouped {
            keys: vec![2i32, 5, 9],
            reductions: vec![
                Reduction {
                    op: Op::Sum,
                    values: vec![Some(Scalar::F32(1.0)), None, Some(Scalar::F32(3.0))],
                    counts: vec![1, 0, 2],
                },
                Reduction {
                    op: Op::Count,
                    values: vec![Some(Scalar::I64(1)); 3],
                    counts: vec![1, 0, 2],
                },
            ],
        };
        let out = g.clone().with_null_groups(&[-1, 2, 3, 9, 10, 11]);
        assert_eq!(out.keys, vec![-1, 2, 3, 5, 9, 10, 11]);
        assert_eq!(
            out.reductions[0].values,
            vec![
                None,
                Some(Scalar::F32(1.0)),
                None,
                None,
                Some(Scalar::F32(3.0)),
                None,
                None
            ]
        );
        assert_eq!(out.reductions[0].counts, vec![0, 1, 0, 0, 2, 0, 0]);
        assert_eq!(out.reductions[1].values[0], Some(Scalar::I64(0)));
        assert_eq!(out.reductions[1].values[1], Some(Scalar::I64(1)));
        assert_eq!(g.clone().with_null_groups(&[2, 5]), g);
        assert_eq!(g.clone().with_null_groups(&[]), g);
        let empty = Grouped::<i32>::empty(&[Op::Max]).with_null_groups(&[4]);
        assert_eq!(empty.keys, vec![4]);
        assert_eq!(empty.reductions[0].values, vec![None]);
    }
}
