//! Asks the OS for a short CPU time slice for the scheduler's own threads.
//!
//! The dispatcher and the poller sleep most of the time and run for tens of
//! microseconds when woken. While batch work keeps every core busy (always
//! on a software adapter, where the "GPU" is the CPU), a woken thread can
//! wait for the running task's whole slice before it gets a core. Linux's
//! EEVDF scheduler (6.12 and later) lets a SCHED_OTHER thread request a
//! shorter slice (`sched_attr.sched_runtime`), which gives it an earlier
//! deadline and lets it preempt on wake-up; no privilege is needed, and the
//! thread's policy and nice value are kept. The kernel clamps the slice to
//! 100 us ..= 100 ms. Threads these threads start get the default slice
//! back (`SCHED_FLAG_RESET_ON_FORK`). Kernels 3.14 to 6.11 accept and ignore
//! the request; threads under a real-time policy, and other systems, are
//! left alone.
//!
//! Measured on lavapipe, 2 cores (BENCHMARKS.md): a 100 us slice lowered the
//! median real-time p99 under batch load from 2.75 ms to 2.25 ms over six
//! interleaved runs each, and the dispatcher's timed waits ended 80 us late
//! instead of 120 us.

use std::time::Duration;

/// Requests `slice` for the calling thread; returns whether the kernel
/// accepted the request (kernels before 6.12 accept and ignore it).
pub(crate) fn request_for_current_thread(slice: Duration) -> bool {
    imp::request(slice)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::time::Duration;

    /// `struct sched_attr` of sched_setattr(2) (SCHED_ATTR_SIZE_VER1).
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        sched_policy: u32,
        sched_flags: u64,
        sched_nice: i32,
        sched_priority: u32,
        sched_runtime: u64,
        sched_deadline: u64,
        sched_period: u64,
        sched_util_min: u32,
        sched_util_max: u32,
    }

    /// Threads started by this one get the default scheduling back.
    const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;
    /// Or-ed into `sched_getscheduler`'s result when reset-on-fork is set.
    const SCHED_RESET_ON_FORK: libc::c_int = 0x4000_0000;

    pub(super) fn request(slice: Duration) -> bool {
        // SAFETY: sched_getscheduler(0) reads the calling thread's policy.
        let policy = unsafe { libc::sched_getscheduler(0) } & !SCHED_RESET_ON_FORK;
        if ![libc::SCHED_OTHER, libc::SCHED_BATCH, libc::SCHED_IDLE].contains(&policy) {
            return false; // a real-time policy (or an error): leave it alone
        }
        // The thread's nice value, so the request does not change it. On
        // Linux, PRIO_PROCESS with 0 is the calling thread. getpriority
        // returns -1 both for nice -1 and for an error; errno tells them
        // apart.
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: getpriority only reads the calling thread's nice value.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        // SAFETY: as above.
        if nice == -1 && unsafe { *libc::__errno_location() } != 0 {
            return false;
        }
        let mut attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: policy as u32,
            sched_flags: SCHED_FLAG_RESET_ON_FORK,
            sched_nice: nice,
            sched_runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
            ..SchedAttr::default()
        };
        // SAFETY: sched_setattr reads `attr.size` bytes from a valid,
        // initialised struct (and may write `size` back on E2BIG); pid 0 is
        // the calling thread.
        let r =
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &mut attr as *mut SchedAttr, 0) };
        r == 0
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::time::Duration;

    pub(super) fn request(_slice: Duration) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn slice_of_this_thread() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    /// Linux 6.12 or later, where SCHED_OTHER honours `sched_runtime`.
    fn kernel_honours_custom_slices() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (major, minor) >= (6, 12)
    }

    #[test]
    fn the_slice_is_applied_to_this_thread_only_and_the_nice_value_is_kept() {
        std::thread::spawn(|| {
            // SAFETY: nice(2) with +3 only lowers this thread's priority.
            let niced = unsafe { libc::nice(3) };
            let granted = request_for_current_thread(Duration::from_micros(250));
            // SAFETY: getpriority reads this thread's own nice value.
            let nice_after = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            if niced != -1 {
                assert_eq!(nice_after, niced, "the request must keep the nice value");
            }
            if granted && kernel_honours_custom_slices() {
                assert_eq!(slice_of_this_thread(), Some(250_000));
                // A thread started from here gets the default slice back.
                let child = std::thread::spawn(slice_of_this_thread)
                    .join()
                    .expect("child thread");
                assert_ne!(child, Some(250_000));
            }
        })
        .join()
        .expect("thread");
        // Another thread keeps the default slice.
        if let Some(mine) = slice_of_this_thread() {
            assert_ne!(mine, 250_000);
        }
    }
}
