//! Keys of several columns (`GROUP BY region, product`): each row's keys
//! combined into one int64 whose order is the columns' lexicographic
//! order, so every keyed call (`reduce_by_key`, `states_by_key`, the
//! `_with_nulls` forms, lanes requests) groups by several columns, and the
//! distinct combined keys it returns are turned back into one column of
//! keys each.
//!
//! The combined key is a mixed-radix number with one digit a column, the
//! first column most significant. A column's digit is its key less the
//! column's smallest key where the spans of all columns multiply to at
//! most 2^63 (one pass, no naming); otherwise each column is planned as a
//! single key column is (dense keys as offsets, sparse ones named in key
//! order by the key dictionary), and where the digits still do not fit
//! together, the distinct combined keys so far are named in order before
//! the next column is added. Every step keeps order, so ascending combined
//! keys are the key tuples in lexicographic order.
//!
//! A combined key means something only with the [`CompositeKeys`] that
//! made it: states merged across machines must be keyed by the decoded
//! columns, not by combined keys.

use crate::error::{Error, Result};
use crate::threads;

use super::dictionary::{Dictionary, dictionary};
use super::{Key, KeyPlan, make_plan};

/// Rows a thread combines at least.
const PARALLEL_ROWS: usize = 1 << 18;

/// Combined keys stay below this: they are non-negative int64s.
const COMBINED_LIMIT: u128 = 1 << 63;

/// One column of keys of a composite key.
#[derive(Clone, Copy, Debug)]
pub enum KeyColumn<'a> {
    I32(&'a [i32]),
    U32(&'a [u32]),
    I64(&'a [i64]),
}

impl<'a> From<&'a [i32]> for KeyColumn<'a> {
    fn from(k: &'a [i32]) -> Self {
        KeyColumn::I32(k)
    }
}
impl<'a> From<&'a [u32]> for KeyColumn<'a> {
    fn from(k: &'a [u32]) -> Self {
        KeyColumn::U32(k)
    }
}
impl<'a> From<&'a [i64]> for KeyColumn<'a> {
    fn from(k: &'a [i64]) -> Self {
        KeyColumn::I64(k)
    }
}

impl KeyColumn<'_> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            KeyColumn::I32(k) => k.len(),
            KeyColumn::U32(k) => k.len(),
            KeyColumn::I64(k) => k.len(),
        }
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of row `row` (below [`KeyColumn::len`]), widened to i128.
    #[inline]
    pub fn key(&self, row: usize) -> i128 {
        match self {
            KeyColumn::I32(k) => k[row] as i128,
            KeyColumn::U32(k) => k[row] as i128,
            KeyColumn::I64(k) => k[row] as i128,
        }
    }
}

/// One column of distinct keys, in its own type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyValues {
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
}

impl KeyValues {
    /// Number of keys.
    pub fn len(&self) -> usize {
        match self {
            KeyValues::I32(k) => k.len(),
            KeyValues::U32(k) => k.len(),
            KeyValues::I64(k) => k.len(),
        }
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Key `i` (below [`KeyValues::len`]), widened to i128.
    pub fn key(&self, i: usize) -> i128 {
        match self {
            KeyValues::I32(k) => k[i] as i128,
            KeyValues::U32(k) => k[i] as i128,
            KeyValues::I64(k) => k[i] as i128,
        }
    }

    /// An empty column of `column`'s type with room for `n` keys.
    fn like(column: &KeyColumn<'_>, n: usize) -> Self {
        match column {
            KeyColumn::I32(_) => KeyValues::I32(Vec::with_capacity(n)),
            KeyColumn::U32(_) => KeyValues::U32(Vec::with_capacity(n)),
            KeyColumn::I64(_) => KeyValues::I64(Vec::with_capacity(n)),
        }
    }

    /// Appends `key` (a key of this column's type, widened).
    fn push(&mut self, key: i128) {
        match self {
            KeyValues::I32(k) => k.push(key as i32),
            KeyValues::U32(k) => k.push(key as u32),
            KeyValues::I64(k) => k.push(key as i64),
        }
    }
}

/// How a column's keys, or the combined keys so far, became digits.
#[derive(Clone, Debug)]
enum Naming {
    /// digit = key - min.
    Offset { min: i128 },
    /// digit = the key's index in `distinct` (ascending).
    Named { distinct: KeyValues },
}

impl Naming {
    fn key(&self, digit: u64) -> i128 {
        match self {
            Naming::Offset { min } => min + digit as i128,
            Naming::Named { distinct } => distinct.key(digit as usize),
        }
    }
}

/// One step of the combination, in the order taken.
#[derive(Clone, Debug)]
enum Step {
    /// combined = combined * span + digit of `column`.
    Column {
        column: usize,
        span: u64,
        naming: Naming,
    },
    /// combined = the digit of the combined keys so far under `naming`.
    Rename { naming: Naming },
}

/// The combined keys of several key columns, and how to turn combined
/// keys back into the columns' keys.
///
/// ```
/// use gpulanes::{CompositeKeys, Engine, KeyValues, NanPolicy, Op, Scalar};
/// let engine = Engine::new()?;
/// let region: Vec<i32> = vec![2, 1, 2, 1, 2];
/// let product: Vec<i64> = vec![10, 7, 10, 9, 3];
/// let amount = [1.0f64, 2.0, 3.0, 4.0, 5.0];
/// let by = CompositeKeys::new(&[region.as_slice().into(), product.as_slice().into()])?;
/// let g = engine.reduce_by_key(by.keys(), &amount, &[Op::Sum], NanPolicy::Propagate)?;
/// let columns = by.columns_of(&g.keys)?;
/// assert_eq!(columns[0], KeyValues::I32(vec![1, 1, 2, 2]));
/// assert_eq!(columns[1], KeyValues::I64(vec![7, 9, 3, 10]));
/// assert_eq!(g.reductions[0].values[3], Some(Scalar::F64(4.0)));
/// # Ok::<(), gpulanes::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct CompositeKeys {
    combined: Vec<i64>,
    steps: Vec<Step>,
    /// The template of each column's decoded keys (type only).
    types: Vec<KeyValues>,
    /// Combined keys are below this.
    limit: u64,
}

impl CompositeKeys {
    /// Combines `columns` (one key a row each, of one length) into one
    /// key a row whose order is the columns' lexicographic order.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when there are no columns or they differ in
    /// length; [`Error::Internal`] when a thread combining rows fails.
    pub fn new(columns: &[KeyColumn<'_>]) -> Result<Self> {
        Self::within(columns, COMBINED_LIMIT)
    }

    /// [`CompositeKeys::new`] with combined keys kept below `bound` (at
    /// most 2^63; lower in tests, to reach renames with few rows).
    fn within(columns: &[KeyColumn<'_>], bound: u128) -> Result<Self> {
        let Some(first) = columns.first() else {
            return Err(Error::InvalidInput("no key columns given".into()));
        };
        let rows = first.len();
        if let Some((i, c)) = columns.iter().enumerate().find(|(_, c)| c.len() != rows) {
            return Err(Error::InvalidInput(format!(
                "key column {i} has {} rows, column 0 has {rows}",
                c.len()
            )));
        }
        let types = columns.iter().map(|c| KeyValues::like(c, 0)).collect();
        let mut out = CompositeKeys {
            combined: vec![0; rows],
            steps: Vec::with_capacity(columns.len()),
            types,
            limit: 1,
        };
        if rows == 0 {
            return Ok(out);
        }
        let ranges: Vec<Option<(i128, i128)>> = columns.iter().map(column_range).collect();
        let raw_product = ranges.iter().try_fold(1u128, |p, r| {
            let (lo, hi) = r.unwrap_or((0, 0));
            p.checked_mul((hi - lo + 1) as u128).filter(|&p| p <= bound)
        });
        for (c, column) in columns.iter().enumerate() {
            let (span, naming, ids) = match raw_product {
                // Offsets fit together: no column needs naming.
                Some(_) => {
                    let (lo, hi) = ranges[c].unwrap_or((0, 0));
                    ((hi - lo + 1) as u64, Naming::Offset { min: lo }, None)
                }
                None => plan_column(column)?,
            };
            if out.limit as u128 * span as u128 > bound {
                out.rename()?;
                if out.limit as u128 * span as u128 > bound {
                    return Err(Error::InvalidInput(format!(
                        "{} distinct key tuples of the first {c} columns and {span} keys of \
                         column {c} do not fit one int64 key",
                        out.limit
                    )));
                }
            }
            out.add_digits(column, span, &naming, ids.as_deref())?;
            out.steps.push(Step::Column {
                column: c,
                span,
                naming,
            });
        }
        Ok(out)
    }

    /// The combined keys, one a row.
    pub fn keys(&self) -> &[i64] {
        &self.combined
    }

    /// The columns' keys of each of `combined` (combined keys these
    /// `CompositeKeys` made, such as the distinct keys of a keyed
    /// reduction over [`CompositeKeys::keys`]): one column of keys each,
    /// in the columns' types, `combined.len()` keys long.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a key outside the range the columns
    /// combine to (a key inside it decodes to the tuple it stands for,
    /// whether or not a row has that tuple).
    pub fn columns_of(&self, combined: &[i64]) -> Result<Vec<KeyValues>> {
        let mut out: Vec<KeyValues> = self
            .types
            .iter()
            .map(|t| match t {
                KeyValues::I32(_) => KeyValues::I32(Vec::with_capacity(combined.len())),
                KeyValues::U32(_) => KeyValues::U32(Vec::with_capacity(combined.len())),
                KeyValues::I64(_) => KeyValues::I64(Vec::with_capacity(combined.len())),
            })
            .collect();
        let mut keys = vec![0i128; self.types.len()];
        for &k in combined {
            let bad =
                || Error::InvalidInput(format!("{k} is outside the keys these columns combine to"));
            if k < 0 || k as u64 >= self.limit {
                return Err(bad());
            }
            let mut v = k as u64;
            for step in self.steps.iter().rev() {
                match step {
                    Step::Column {
                        column,
                        span,
                        naming,
                    } => {
                        keys[*column] = naming.key(v % span);
                        v /= span;
                    }
                    Step::Rename { naming } => {
                        let key = naming.key(v);
                        v = u64::try_from(key).map_err(|_| bad())?;
                    }
                }
            }
            for (column, &key) in out.iter_mut().zip(&keys) {
                column.push(key);
            }
        }
        Ok(out)
    }

    /// Names the combined keys so far densely, in order, so the next
    /// column's digits fit beside them.
    fn rename(&mut self) -> Result<()> {
        // Named by their distinct values, the tightest digits there are
        // (offsets would leave every unused value between the smallest and
        // the largest).
        let Some((min, max)) = super::key_range(&self.combined) else {
            return Ok(());
        };
        let Dictionary { ids, distinct } = dictionary(&self.combined, min, max)?;
        for (c, id) in self.combined.iter_mut().zip(ids) {
            *c = id as i64;
        }
        self.limit = (distinct.len() as u64).max(1);
        self.steps.push(Step::Rename {
            naming: Naming::Named {
                distinct: KeyValues::I64(distinct),
            },
        });
        Ok(())
    }

    /// combined = combined * span + the column's digit, for every row, over
    /// the host's threads.
    fn add_digits(
        &mut self,
        column: &KeyColumn<'_>,
        span: u64,
        naming: &Naming,
        ids: Option<&[u32]>,
    ) -> Result<()> {
        let rows = self.combined.len();
        let ranges = threads::ranges(rows, threads::threads_for(rows, PARALLEL_ROWS));
        let lens: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
        let parts: Vec<_> = ranges
            .into_iter()
            .zip(threads::split_into(&mut self.combined, lens))
            .collect();
        let min = match naming {
            Naming::Offset { min } => *min,
            Naming::Named { .. } => 0,
        };
        let span = span as i64;
        let done = threads::on_threads(parts, |(rows, out)| {
            let digit = |row: usize| -> i64 {
                match ids {
                    Some(ids) => ids[row] as i64,
                    None => (column.key(row) - min) as i64,
                }
            };
            for (c, row) in out.iter_mut().zip(rows) {
                *c = *c * span + digit(row);
            }
        });
        if done.iter().any(Option::is_none) {
            return Err(Error::Internal("a thread combining keys panicked".into()));
        }
        self.limit *= span as u64;
        Ok(())
    }
}

/// The smallest and largest key of a column (`None` for no rows).
fn column_range(column: &KeyColumn<'_>) -> Option<(i128, i128)> {
    fn of<K: Key>(k: &[K]) -> Option<(i128, i128)> {
        super::key_range(k).map(|(lo, hi)| (lo.to_i128(), hi.to_i128()))
    }
    match column {
        KeyColumn::I32(k) => of(k),
        KeyColumn::U32(k) => of(k),
        KeyColumn::I64(k) => of(k),
    }
}

/// A column planned as a single key column is: its span, how its keys
/// became digits, and each row's id where they were named.
fn plan_column(column: &KeyColumn<'_>) -> Result<(u64, Naming, Option<Vec<u32>>)> {
    fn of<K: Key>(
        k: &[K],
        wrap: fn(Vec<K>) -> KeyValues,
    ) -> Result<(u64, Naming, Option<Vec<u32>>)> {
        Ok(match make_plan(k)? {
            KeyPlan::Dense { min, groups } => {
                (groups.max(1), Naming::Offset { min: min.to_i128() }, None)
            }
            KeyPlan::Sparse { ids, distinct } => (
                (distinct.len() as u64).max(1),
                Naming::Named {
                    distinct: wrap(distinct),
                },
                Some(ids),
            ),
        })
    }
    match column {
        KeyColumn::I32(k) => of(k, KeyValues::I32),
        KeyColumn::U32(k) => of(k, KeyValues::U32),
        KeyColumn::I64(k) => of(k, KeyValues::I64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::xorshift;
    use std::collections::BTreeSet;

    /// The columns' key tuples, distinct and in lexicographic order.
    fn tuples(columns: &[KeyColumn<'_>]) -> Vec<Vec<i128>> {
        let n = columns[0].len();
        let set: BTreeSet<Vec<i128>> = (0..n)
            .map(|r| columns.iter().map(|c| c.key(r)).collect())
            .collect();
        set.into_iter().collect()
    }

    /// Combines, checks that combined keys order as the tuples do, and
    /// that the distinct combined keys decode to the distinct tuples.
    fn check(columns: &[KeyColumn<'_>], what: &str) -> CompositeKeys {
        let ck = CompositeKeys::new(columns).unwrap();
        let mut distinct: Vec<i64> = ck.keys().to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let decoded = ck.columns_of(&distinct).unwrap();
        let want = tuples(columns);
        assert_eq!(distinct.len(), want.len(), "{what}: distinct");
        for (i, t) in want.iter().enumerate() {
            let got: Vec<i128> = decoded.iter().map(|c| c.key(i)).collect();
            assert_eq!(&got, t, "{what}: group {i}");
        }
        assert!(ck.keys().iter().all(|&k| k >= 0 && (k as u64) < ck.limit));
        ck
    }

    #[test]
    fn combined_keys_order_as_the_key_tuples() {
        let mut next = xorshift(5);
        for n in [1usize, 2, 77, 5000, 300_001] {
            let a: Vec<i32> = (0..n).map(|_| (next() % 7) as i32 - 3).collect();
            let b: Vec<i64> = (0..n).map(|_| (next() % 1000) as i64 * 1_000_003).collect();
            let c: Vec<u32> = (0..n).map(|_| u32::MAX - (next() % 5) as u32).collect();
            check(&[a.as_slice().into()], "one column");
            check(&[a.as_slice().into(), c.as_slice().into()], "offsets");
            check(
                &[
                    b.as_slice().into(),
                    a.as_slice().into(),
                    c.as_slice().into(),
                ],
                "three",
            );
        }
    }

    #[test]
    fn wide_columns_are_named_and_renamed_to_fit() {
        let mut next = xorshift(6);
        let n = 20_000;
        // int64 extremes: the spans multiply past 2^63 at once.
        let wide = |next: &mut dyn FnMut() -> u64| -> Vec<i64> {
            (0..n)
                .map(|_| [i64::MIN, i64::MAX, 0][(next() % 3) as usize] ^ (next() % 64) as i64)
                .collect()
        };
        let (a, b, c) = (wide(&mut next), wide(&mut next), wide(&mut next));
        let ck = check(
            &[
                a.as_slice().into(),
                b.as_slice().into(),
                c.as_slice().into(),
            ],
            "extremes",
        );
        assert!(ck.steps.iter().any(|s| matches!(
            s,
            Step::Column {
                naming: Naming::Named { .. },
                ..
            }
        )));
        // 20,000 distinct values in each of five columns: the named digits
        // (20,000^5 > 2^63) do not fit together, so the first columns are
        // renamed.
        let big: Vec<Vec<i64>> = (0..5)
            .map(|_| (0..n).map(|_| (next() >> 1) as i64).collect())
            .collect();
        let cols: Vec<KeyColumn<'_>> = big.iter().map(|c| c.as_slice().into()).collect();
        let ck = check(&cols, "renamed");
        assert!(ck.steps.iter().any(|s| matches!(s, Step::Rename { .. })));
    }

    #[test]
    fn a_prefix_of_few_tuples_is_renamed_and_too_many_refused() {
        // Under a bound of 2^12: 20 x 30 x 10 spans do not fit (6,000), nor
        // does the 20 x 30 prefix beside the third column, but the prefix
        // holds only 20 distinct tuples (b follows a), so once they are
        // named the third column fits.
        let mut next = xorshift(8);
        let n = 2000;
        let a: Vec<i32> = (0..n).map(|_| (next() % 20) as i32 + 7).collect();
        let b: Vec<u32> = a.iter().map(|&a| (a as u32 * 7) % 30).collect();
        let c: Vec<i64> = (0..n).map(|_| (next() % 10) as i64 - 5).collect();
        let cols = [
            a.as_slice().into(),
            b.as_slice().into(),
            c.as_slice().into(),
        ];
        let ck = CompositeKeys::within(&cols, 1 << 12).unwrap();
        assert!(ck.steps.iter().any(|s| matches!(s, Step::Rename { .. })));
        assert!(ck.limit <= 1 << 12);
        let mut distinct: Vec<i64> = ck.keys().to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let decoded = ck.columns_of(&distinct).unwrap();
        let want = tuples(&cols);
        assert_eq!(distinct.len(), want.len());
        for (i, t) in want.iter().enumerate() {
            let got: Vec<i128> = decoded.iter().map(|c| c.key(i)).collect();
            assert_eq!(&got, t);
        }
        // Under 2^7 the 20 named tuples and b's 30 keys do not fit.
        let err = CompositeKeys::within(&cols, 1 << 7).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
    }

    #[test]
    fn bad_columns_and_keys_are_refused() {
        assert!(CompositeKeys::new(&[]).is_err());
        let a = [1i32, 2];
        let b = [1i64];
        let err = CompositeKeys::new(&[a.as_slice().into(), b.as_slice().into()]).unwrap_err();
        assert!(err.to_string().contains("column 1 has 1 rows"), "{err}");
        let ck = CompositeKeys::new(&[a.as_slice().into(), a.as_slice().into()]).unwrap();
        assert!(ck.columns_of(&[-1]).is_err());
        assert!(ck.columns_of(&[ck.limit as i64]).is_err());
        let empty = CompositeKeys::new(&[KeyColumn::I32(&[]), KeyColumn::U32(&[])]).unwrap();
        assert!(empty.keys().is_empty());
        assert_eq!(
            empty.columns_of(&[]).unwrap(),
            vec![KeyValues::I32(vec![]), KeyValues::U32(vec![])]
        );
    }
}
