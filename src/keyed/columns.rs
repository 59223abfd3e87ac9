//! Keyed reductions into [`StateColumns`]: every kind a value column needs
//! (sum, max, min) for every key, filled by one pass over the rows, for
//! merging with the states of other rows of the same keys (other chunks,
//! other machines) and finalising there.

use crate::dtype::Element;
use crate::error::Result;
use crate::state::StateKind;
use crate::state_columns::StateColumns;
use crate::validity::Validity;

use super::accumulators::GroupAccumulators;
use super::finish::Finish;
use super::nulls::{check_validity, insertions, merged, split};
use super::{Key, WindowKeys, check_request, keyed_groups};

/// Distinct keys, ascending, and their states, group `i` of `states`
/// being key `keys[i]`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupedStateColumns<K> {
    /// Distinct keys, ascending.
    pub keys: Vec<K>,
    /// One group of states a key, holding the kinds asked for.
    pub states: StateColumns,
}

impl<K: Key> GroupedStateColumns<K> {
    /// No keys yet, for `E` values and `kinds`.
    pub(crate) fn empty<E: Element>(kinds: &[StateKind], groups: usize) -> Result<Self> {
        let states = StateColumns::new(E::DTYPE, kinds)?;
        Ok(GroupedStateColumns {
            keys: Vec::with_capacity(groups),
            states,
        })
    }

    /// The ops whose pass fills the kinds held.
    pub(crate) fn ops(&self) -> Vec<crate::Op> {
        self.states.kinds().into_iter().map(StateKind::op).collect()
    }

    /// A window handler appending each group's key and states, in order.
    pub(crate) fn collect(
        &mut self,
    ) -> impl FnMut(&GroupAccumulators<'_>, WindowKeys<'_, K>) -> Result<()> + '_ {
        move |acc, names| {
            for (key, g) in names.groups(acc) {
                self.keys.push(key);
                acc.push_columns(g, &mut self.states);
            }
            Ok(())
        }
    }

    /// These with a group that has seen no value for each key of
    /// `null_keys` (ascending) they lack.
    pub(crate) fn with_null_groups(self, null_keys: &[K]) -> Self {
        let insert = insertions(&self.keys, null_keys);
        if insert.is_empty() {
            return self;
        }
        let picks = merged((0..self.keys.len()).map(Some).collect(), &insert, |_| None);
        GroupedStateColumns {
            keys: merged(self.keys, &insert, |j| null_keys[j]),
            states: self.states.gather(picks.into_iter()),
        }
    }
}

impl crate::Engine {
    /// The states of `kinds` of every distinct key of `keys` over
    /// `values`, from one pass over the rows: what
    /// [`Engine::states_by_key`](crate::Engine::states_by_key) gives for
    /// each kind ([`StateColumns::state`]), held column by column.
    ///
    /// ```
    /// use gpulanes::{NanPolicy, Op, Scalar, StateColumns, StateKind};
    /// let engine = gpulanes::Engine::new()?;
    /// let kinds = [StateKind::Sum, StateKind::Max];
    /// let a = engine.state_columns_by_key(&[3i64, 9, 3], &[1.0f64, 2.0, 4.0], &kinds)?;
    /// let b = engine.state_columns_by_key(&[9i64], &[-6.0f64], &kinds)?;
    /// let (keys, all) = StateColumns::merge_by_key(&[(&a.keys[..], &a.states), (&b.keys[..], &b.states)])?;
    /// assert_eq!(keys, vec![3, 9]);
    /// let sums = all.finalize(Op::Sum, NanPolicy::Propagate)?;
    /// assert_eq!(sums, vec![Some(Scalar::F64(5.0)), Some(Scalar::F64(-4.0))]);
    /// let bytes = all.to_bytes();
    /// assert_eq!(StateColumns::from_bytes(&bytes)?, all);
    /// # Ok::<(), gpulanes::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for no kinds;
    /// otherwise as [`Engine::reduce_by_key`](crate::Engine::reduce_by_key).
    pub fn state_columns_by_key<K: Key, E: Element>(
        &self,
        keys: &[K],
        values: &[E],
        kinds: &[StateKind],
    ) -> Result<GroupedStateColumns<K>> {
        let mut out = GroupedStateColumns::empty::<E>(kinds, 0)?;
        let ops = out.ops();
        check_request(keys.len() as u64, values.len() as u64, &ops)?;
        keyed_groups(
            self.context(),
            keys,
            values,
            &ops,
            Finish::OnHost,
            out.collect(),
        )?;
        Ok(out)
    }

    /// [`Engine::state_columns_by_key`](crate::Engine::state_columns_by_key)
    /// where `valid` marks which values hold one: a key whose values are
    /// all null gets a group that has seen no value, as in
    /// [`Engine::states_by_key_with_nulls`](crate::Engine::states_by_key_with_nulls).
    ///
    /// # Errors
    /// As [`Engine::reduce_by_key_with_nulls`](crate::Engine::reduce_by_key_with_nulls),
    /// and for no kinds.
    pub fn state_columns_by_key_with_nulls<K: Key, E: Element>(
        &self,
        keys: &[K],
        values: &[E],
        valid: Validity<'_>,
        kinds: &[StateKind],
    ) -> Result<GroupedStateColumns<K>> {
        let probe = GroupedStateColumns::<K>::empty::<E>(kinds, 0)?;
        check_request(keys.len() as u64, values.len() as u64, &probe.ops())?;
        check_validity(values.len(), &valid)?;
        if valid.null_count() == 0 {
            return self.state_columns_by_key(keys, values, kinds);
        }
        let present = split(keys, values, &valid)?;
        Ok(self
            .state_columns_by_key(&present.keys, &present.values, kinds)?
            .with_null_groups(&present.null_keys))
    }
}
