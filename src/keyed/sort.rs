//! Rows put in group order on the host before a keyed pass, for CPU
//! adapters. There a pass that adds rows one by one to random groups pays,
//! per row, a cache miss and atomics that the driver runs lane after lane;
//! the same rows in group order go run by run (group.wgsl), a few atomics
//! a run. The accumulators are integers, so the order of rows changes no
//! bit of the result.
//!
//! The sort is a two-level counting sort over the host's threads: rows are
//! first scattered by the high digit of their group (512 buckets, so the
//! scatter writes to few places at once; more only where groups span over
//! 2^25 ids, so that a bucket's low digit stays within 16 bits), then each
//! bucket, small enough to stay in cache, is sorted by the remaining low
//! bits. Its output is a group id (not a key) and the value words of every
//! row.

use bytemuck::Pod;

use crate::threads;

/// Rows in group order: `groups[i]` is the group of the row whose value
/// words are `values[i * wpe .. (i + 1) * wpe]`.
pub(crate) struct SortedRows {
    pub groups: Vec<u32>,
    pub values: Vec<u32>,
}

/// Rows a sort takes at most: the sorted copy holds every row's group id
/// and value words (up to 384 MiB at this bound), so larger inputs go
/// unsorted.
pub const MAX_SORTED_ROWS: usize = 1 << 25;

/// Bits of the high digit (the scatter's buckets).
const HIGH_BITS: u32 = 9;

/// Bits a bucket is sorted by at most (its histogram's size): more group
/// bits go to the high digit.
const MAX_LOW_BITS: u32 = 16;

/// Rows per thread below which a level runs on fewer threads.
const PARALLEL_ROWS: usize = 1 << 16;

/// The rows of `values` (`wpe` words a row) in ascending order of
/// `group_of(row)`, each below `groups`; `None` (the caller goes on
/// unsorted) where there are more than [`MAX_SORTED_ROWS`] rows, a group
/// does not fit 32 bits, `wpe` is not 1 or 2, the sorted copy cannot be
/// allocated, a sorting thread panicked (a part run on the calling
/// thread, as a single part is, unwinds instead), or `group_of` gave a
/// row two different groups.
pub(crate) fn sort_by_group(
    group_of: impl Fn(usize) -> u32 + Sync,
    groups: u64,
    values: &[u32],
    wpe: usize,
) -> Option<SortedRows> {
    if groups > 1 << 32 || values.len() > MAX_SORTED_ROWS * wpe {
        return None;
    }
    match wpe {
        1 => sort_rows::<u32>(&group_of, groups, values),
        2 => sort_rows::<[u32; 2]>(&group_of, groups, values),
        _ => None,
    }
}

/// [`sort_by_group`] for rows of one `V` each.
fn sort_rows<V: Pod + Send + Sync>(
    group_of: &(impl Fn(usize) -> u32 + Sync),
    groups: u64,
    words: &[u32],
) -> Option<SortedRows> {
    let values: &[V] = bytemuck::cast_slice(words);
    let n = values.len();
    let bits = 64 - groups.saturating_sub(1).leading_zeros();
    let high_bits = bits.saturating_sub(MAX_LOW_BITS).max(bits.min(HIGH_BITS));
    let shift = bits - high_bits;
    // Zeroed allocations come as fresh pages: no pass writes them twice.
    let mut out_groups = zeroed(n)?;
    let mut out_words = zeroed(words.len())?;
    let out_values: &mut [V] = bytemuck::cast_slice_mut(&mut out_words);
    let starts = scatter_by_high_digit(
        group_of,
        values,
        shift,
        1 << high_bits,
        &mut out_groups,
        out_values,
    )?;
    if shift > 0 {
        sort_buckets(&starts, shift, &mut out_groups, out_values)?;
    }
    Some(SortedRows {
        groups: out_groups,
        values: out_words,
    })
}

/// `len` zeros, or `None` where the memory cannot be had.
fn zeroed(len: usize) -> Option<Vec<u32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, 0);
    Some(v)
}

/// Raw pointers to the outputs of a parallel scatter, whose threads write
/// disjoint slots.
struct Outputs<V> {
    groups: *mut u32,
    values: *mut V,
}

// SAFETY: the pointers are used only for writes to slots that no other
// thread touches (see scatter_by_high_digit), while the outputs they point
// into are borrowed mutably by the scatter and outlive its threads.
unsafe impl<V: Send> Send for Outputs<V> {}
unsafe impl<V: Send> Sync for Outputs<V> {}

/// Scatters the rows into `out_groups` / `out_values` by `group >> shift`
/// (stable within a bucket), over the host's threads. Returns where each
/// of the `buckets` buckets starts, and the end, `n`, last.
fn scatter_by_high_digit<V: Pod + Send + Sync>(
    group_of: &(impl Fn(usize) -> u32 + Sync),
    values: &[V],
    shift: u32,
    buckets: usize,
    out_groups: &mut [u32],
    out_values: &mut [V],
) -> Option<Vec<usize>> {
    let n = values.len();
    let ranges = threads::ranges(n, threads::threads_for(n, PARALLEL_ROWS));
    // A group at or past 2^bits (never below `groups`) leaves the rows
    // unsorted.
    let counts: Vec<Vec<usize>> = threads::on_threads(ranges.clone(), |rows| {
        let mut count = vec![0usize; buckets];
        for row in rows {
            *count.get_mut((group_of(row) >> shift) as usize)? += 1;
        }
        Some(count)
    })
    .into_iter()
    .collect::<Option<Option<_>>>()??;
    // Each range's first slot in each bucket: buckets in order, and the
    // ranges in order inside a bucket.
    let mut next: Vec<Vec<usize>> = vec![vec![0; buckets]; ranges.len()];
    let mut starts = Vec::with_capacity(buckets + 1);
    let mut at = 0;
    for b in 0..buckets {
        starts.push(at);
        for (r, count) in counts.iter().enumerate() {
            next[r][b] = at;
            at += count[b];
        }
    }
    starts.push(at);
    if at != n {
        return None;
    }
    let outputs = Outputs {
        groups: out_groups.as_mut_ptr(),
        values: out_values.as_mut_ptr(),
    };
    let outputs = &outputs;
    // Each range takes its counts along: the slots it has left in each
    // bucket.
    let parts: Vec<_> = ranges.into_iter().zip(next).zip(counts).collect();
    let written = threads::on_threads(parts, |((rows, mut next), mut left)| {
        for row in rows {
            let g = group_of(row);
            let b = (g >> shift) as usize;
            // A group that differs from the one counted would overrun the
            // range's slots in its bucket: stop there.
            if b >= buckets || left[b] == 0 {
                return false;
            }
            // SAFETY: range r writes only the counts[r][b] slots of bucket
            // b from the first next[r][b] gave (`left` checked just above),
            // which no other range or bucket shares and which lie inside
            // 0..n (the counts add up to n), the outputs' length.
            unsafe {
                *outputs.groups.add(next[b]) = g;
                *outputs.values.add(next[b]) = values[row];
            }
            next[b] += 1;
            left[b] -= 1;
        }
        true
    });
    if !written.into_iter().all(|w| w == Some(true)) {
        return None;
    }
    Some(starts)
}

/// Sorts each bucket (`starts[b] .. starts[b + 1]`) by the low `shift`
/// bits of its groups, over the host's threads, a run of whole buckets a
/// thread.
fn sort_buckets<V: Pod + Send + Sync>(
    starts: &[usize],
    shift: u32,
    groups: &mut [u32],
    values: &mut [V],
) -> Option<()> {
    let buckets = starts.len() - 1;
    let n = groups.len();
    // Bucket runs of about equal rows: run t ends at the first bucket
    // boundary at or past t / threads of the rows.
    let threads = threads::threads_for(n, PARALLEL_ROWS);
    let mut cuts = vec![0usize];
    for t in 1..threads {
        let target = n / threads * t;
        let b = starts.partition_point(|&s| s < target).min(buckets);
        cuts.push(b.max(*cuts.last().unwrap_or(&0)));
    }
    cuts.push(buckets);
    let lens: Vec<usize> = cuts
        .windows(2)
        .map(|w| starts[w[1]] - starts[w[0]])
        .collect();
    let parts: Vec<_> = cuts
        .windows(2)
        .map(|w| &starts[w[0]..=w[1]])
        .zip(threads::split_into(groups, lens.iter().copied()))
        .zip(threads::split_into(values, lens.iter().copied()))
        .map(|((bounds, g), v)| (bounds, g, v))
        .collect();
    let mask = (1u32 << shift) - 1;
    threads::on_threads(parts, |(bounds, groups, values)| {
        let first = bounds[0];
        let mut count = vec![0usize; 1 << shift];
        let (mut scratch_g, mut scratch_v) = (Vec::new(), Vec::new());
        let mut pairs: Vec<(u32, V)> = Vec::new();
        for b in bounds.windows(2) {
            let range = b[0] - first..b[1] - first;
            let (g, v) = (&mut groups[range.clone()], &mut values[range]);
            if g.len() < 2 {
                continue;
            }
            if g.len() < count.len() / 8 {
                // Few rows for the histogram's size: a comparison sort.
                pairs.clear();
                pairs.extend(g.iter().copied().zip(v.iter().copied()));
                pairs.sort_by_key(|p| p.0);
                for (i, &(x, y)) in pairs.iter().enumerate() {
                    g[i] = x;
                    v[i] = y;
                }
                continue;
            }
            count.fill(0);
            for &x in g.iter() {
                count[(x & mask) as usize] += 1;
            }
            let mut at = 0;
            for c in count.iter_mut() {
                let here = *c;
                *c = at;
                at += here;
            }
            scratch_g.clear();
            scratch_g.resize(g.len(), 0u32);
            scratch_v.clear();
            scratch_v.resize(v.len(), V::zeroed());
            for (&x, &y) in g.iter().zip(v.iter()) {
                let slot = &mut count[(x & mask) as usize];
                scratch_g[*slot] = x;
                scratch_v[*slot] = y;
                *slot += 1;
            }
            g.copy_from_slice(&scratch_g);
            v.copy_from_slice(&scratch_v);
        }
    })
    .into_iter()
    .collect::<Option<Vec<()>>>()?;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::xorshift;

    /// Sorts rows whose value words carry their row number, and checks
    /// that the groups come out ascending, every row once, each with its
    /// own value, rows of one group in their original order.
    fn check(groups_of_rows: &[u32], groups: u64, wpe: usize) {
        let n = groups_of_rows.len();
        let words: Vec<u32> = (0..n)
            .flat_map(|r| (0..wpe).map(move |w| (r * wpe + w) as u32))
            .collect();
        let sorted = sort_by_group(|r| groups_of_rows[r], groups, &words, wpe).unwrap();
        assert_eq!(sorted.groups.len(), n);
        assert_eq!(sorted.values.len(), n * wpe);
        let mut seen = vec![false; n];
        let mut last: Option<(u32, usize)> = None;
        for (i, &g) in sorted.groups.iter().enumerate() {
            let row = sorted.values[i * wpe] as usize / wpe;
            assert!(!seen[row], "row {row} twice");
            seen[row] = true;
            assert_eq!(g, groups_of_rows[row], "row {row} lost its group");
            for w in 0..wpe {
                assert_eq!(sorted.values[i * wpe + w], (row * wpe + w) as u32);
            }
            if let Some((lg, lrow)) = last {
                assert!(lg < g || (lg == g && lrow < row), "order at {i}");
            }
            last = Some((g, row));
        }
    }

    #[test]
    fn rows_come_out_in_group_order_with_their_values() {
        let mut next = xorshift(0x5EED);
        for &(n, groups) in &[
            (0usize, 2u64),
            (1, 2),
            (1000, 2),
            (1000, 2048),
            (5000, 2049),
            (200_000, 1 << 20),
            (300_000, 1 << 28),
            (100_000, 1 << 32),
        ] {
            for wpe in [1, 2] {
                let rows: Vec<u32> = (0..n).map(|_| (next() % groups) as u32).collect();
                check(&rows, groups, wpe);
            }
        }
    }

    #[test]
    fn skewed_and_extreme_groups_sort() {
        let n = 150_000;
        // One group holding nearly every row, the last group, group 0.
        let rows: Vec<u32> = (0..n)
            .map(|r| match r % 7 {
                0 => u32::MAX,
                1 => 0,
                _ => 0x8000_0001,
            })
            .collect();
        check(&rows, 1 << 32, 1);
        let rows: Vec<u32> = (0..n as u32).rev().collect();
        check(&rows, n as u64, 2);
    }

    #[test]
    fn a_bucket_sorted_by_sixteen_low_bits() {
        // 2^32 groups: 16 high and 16 low bits. Rows in two high buckets,
        // enough of them for the bucket pass's counting branch.
        let mut next = xorshift(0xB0C);
        let rows: Vec<u32> = (0..100_000)
            .map(|_| (next() as u32 & 0xffff) | ((next() as u32 & 1) << 31))
            .collect();
        check(&rows, 1 << 32, 2);
    }

    #[test]
    fn more_than_32_bits_of_groups_odd_rows_or_groups_past_the_count_go_unsorted() {
        assert!(sort_by_group(|_| 0, (1 << 32) + 1, &[0, 0], 1).is_none());
        assert!(sort_by_group(|_| 0, 4, &[0, 0, 0], 3).is_none());
        assert!(sort_by_group(|r| r as u32 * 1000, 600, &[0; 600], 1).is_none());
    }

    #[test]
    fn a_group_that_changes_between_reads_stops_the_sort() {
        // group_of gives row 7 another group on its second read: the
        // scatter must not write past the slots it counted.
        use std::sync::atomic::{AtomicUsize, Ordering};
        let reads = AtomicUsize::new(0);
        let words: Vec<u32> = (0..1000).collect();
        let sorted = sort_by_group(
            |row| {
                if row == 7 && reads.fetch_add(1, Ordering::Relaxed) == 1 {
                    1999
                } else {
                    row as u32
                }
            },
            2000,
            &words,
            1,
        );
        assert!(sorted.is_none());
    }
}
