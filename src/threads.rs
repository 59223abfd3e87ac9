//! Host work split over the machine's cores: one part a thread, each on a
//! scoped thread, so parts may borrow from the caller.

use std::ops::Range;
use std::sync::mpsc;

/// Threads for `items` items where a thread is worth it only for at least
/// `per_thread` of them: at most the machine's cores, at least one.
pub(crate) fn threads_for(items: usize, per_thread: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(items / per_thread.max(1))
        .max(1)
}

/// `0..items` cut into `parts` consecutive ranges whose lengths differ by
/// at most one (empty ranges where there are more parts than items).
pub(crate) fn ranges(items: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.max(1);
    // In u128: items * parts may pass usize::MAX.
    let at = |p: usize| (items as u128 * p as u128 / parts as u128) as usize;
    (0..parts).map(|p| at(p)..at(p + 1)).collect()
}

/// `slice` cut into consecutive pieces of `lens`, one a part (the lens add
/// up to its length, or the last pieces come short).
pub(crate) fn split_into<T>(
    mut slice: &mut [T],
    lens: impl IntoIterator<Item = usize>,
) -> Vec<&mut [T]> {
    lens.into_iter()
        .map(|len| {
            let len = len.min(slice.len());
            let (piece, rest) = std::mem::take(&mut slice).split_at_mut(len);
            slice = rest;
            piece
        })
        .collect()
}

/// `f` of every part, in order, each on its own thread; `None` for a part
/// whose thread panicked. A single part, and a part whose thread cannot be
/// started, runs on the calling thread, where a panic unwinds to the caller
/// as it would without threads.
pub(crate) fn on_threads<I: Send, T: Send>(
    parts: Vec<I>,
    f: impl Fn(I) -> T + Sync,
) -> Vec<Option<T>> {
    if parts.len() <= 1 {
        return parts.into_iter().map(|p| Some(f(p))).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let started: Vec<_> = parts
            .into_iter()
            .map(|p| {
                // The part goes to its thread once the thread runs, so a
                // thread that cannot start leaves the part here.
                let (give, take) = mpsc::channel::<I>();
                let thread = std::thread::Builder::new()
                    .spawn_scoped(scope, move || take.recv().ok().map(f));
                match thread {
                    Ok(handle) => match give.send(p) {
                        Ok(()) => Ok(handle),
                        Err(mpsc::SendError(p)) => Err(f(p)),
                    },
                    Err(_) => Err(f(p)),
                }
            })
            .collect();
        started
            .into_iter()
            .map(|s| match s {
                Ok(handle) => handle.join().ok().flatten(),
                Err(done) => Some(done),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_item_once_in_order() {
        for items in [0, 1, 2, 7, 100, 1 << 20, usize::MAX] {
            for parts in [1, 2, 3, 16, 200] {
                let r = ranges(items, parts);
                assert_eq!(r.len(), parts);
                assert_eq!(r[0].start, 0);
                assert_eq!(r[parts - 1].end, items);
                for w in r.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let (min, max) = r.iter().fold((usize::MAX, 0), |(a, b), x| {
                    (a.min(x.len()), b.max(x.len()))
                });
                assert!(max - min <= 1, "{items} items in {parts} parts: {r:?}");
            }
        }
    }

    #[test]
    fn results_come_back_in_order_and_panics_as_none() {
        let parts: Vec<u32> = (0..5).collect();
        let got = on_threads(parts, |p| {
            assert!(p != 3, "part 3 panics");
            p * 10
        });
        assert_eq!(got, vec![Some(0), Some(10), Some(20), None, Some(40)]);
        assert_eq!(on_threads(vec![7u32], |p| p + 1), vec![Some(8)]);
        assert!(on_threads(Vec::<u32>::new(), |p| p).is_empty());
    }

    #[test]
    fn threads_follow_the_work() {
        assert_eq!(threads_for(0, 100), 1);
        assert_eq!(threads_for(99, 100), 1);
        let cores = std::thread::available_parallelism().map_or(1, |t| t.get());
        assert_eq!(threads_for(100 * cores + 99, 100), cores);
        assert_eq!(threads_for(usize::MAX, 0), cores);
    }
}
