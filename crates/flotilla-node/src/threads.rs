//! What the node asks of the OS about its own threads: how much CPU a thread used and how
//! often it was switched away (to diagnose a late raft loop), and a lower scheduling
//! priority for background work (the thread that frees compacted entries), so that it
//! gives way to the rest of the node when the machine is busy.

/// The calling thread's CPU time and context switches so far (`getrusage(RUSAGE_THREAD)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadUsage {
    pub cpu_us: u64,
    /// Switches away because the thread waited (for I/O, a lock, or nothing to do).
    pub waited: u64,
    /// Switches away because the scheduler gave the CPU to another thread.
    pub preempted: u64,
}

impl ThreadUsage {
    #[cfg(not(target_os = "linux"))]
    pub fn now() -> ThreadUsage {
        ThreadUsage::default()
    }

    #[cfg(target_os = "linux")]
    pub fn now() -> ThreadUsage {
        // SAFETY: getrusage only writes the struct it is given; a zeroed `rusage` is valid.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a live `rusage`; RUSAGE_THREAD is Linux's own.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
            return ThreadUsage::default();
        }
        let us = |t: libc::timeval| t.tv_sec.max(0) as u64 * 1_000_000 + t.tv_usec.max(0) as u64;
        ThreadUsage {
            cpu_us: us(ru.ru_utime) + us(ru.ru_stime),
            waited: ru.ru_nvcsw.max(0) as u64,
            preempted: ru.ru_nivcsw.max(0) as u64,
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: ThreadUsage) -> ThreadUsage {
        ThreadUsage {
            cpu_us: self.cpu_us.saturating_sub(earlier.cpu_us),
            waited: self.waited.saturating_sub(earlier.waited),
            preempted: self.preempted.saturating_sub(earlier.preempted),
        }
    }
}

/// How much nicer than the process background threads run (today: freeing compacted
/// entries). With Linux's CFS a thread at nice +10 gets about a tenth of the CPU share of a
/// nice 0 thread when both want it, and all of an idle CPU; so the raft loop's heartbeats
/// win a busy machine, and background work still ends. (Not the snapshot threads: a manual
/// snapshot joins a build in flight, and a slowed build made it answer with an old one.)
pub const BACKGROUND_NICENESS: i32 = 10;

/// Lowers the calling thread's scheduling priority by [`BACKGROUND_NICENESS`] (capped at
/// 19, the lowest). Linux applies `setpriority(PRIO_PROCESS, tid)` to that one thread.
/// Best effort: on failure the thread keeps its priority. Returns the new niceness.
#[cfg(target_os = "linux")]
pub fn lower_priority() -> Option<i32> {
    let tid = this_thread();
    let current = niceness_of(tid)?;
    let target = (current + BACKGROUND_NICENESS).min(19);
    // SAFETY: plain syscall on this thread's own id; raising niceness needs no privilege.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, target) };
    (rc == 0).then_some(target)
}

#[cfg(not(target_os = "linux"))]
pub fn lower_priority() -> Option<i32> {
    None
}

/// The calling thread's id, which Linux's priority calls take for one thread.
#[cfg(target_os = "linux")]
fn this_thread() -> libc::id_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::id_t }
}

#[cfg(target_os = "linux")]
fn niceness_of(tid: libc::id_t) -> Option<i32> {
    // getpriority may legitimately return -1: errno tells an error apart.
    // SAFETY: errno is thread-local; getpriority only reads.
    unsafe {
        *libc::__errno_location() = 0;
        let p = libc::getpriority(libc::PRIO_PROCESS, tid);
        (*libc::__errno_location() == 0).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[cfg(target_os = "linux")]
    fn current_niceness() -> Option<i32> {
        niceness_of(this_thread())
    }

    /// The late-tick diagnosis tells a loop that worked through the gap from one that did
    /// not run: a spinning thread gains CPU time, a sleeping one gains a voluntary switch.
    #[cfg(target_os = "linux")]
    #[test]
    fn thread_usage_tells_working_from_waiting() {
        // Spin until 30 ms of CPU are counted (on a loaded machine that takes longer than
        // 30 ms); a counter that does not count never gets there.
        let start = ThreadUsage::now();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut x = 0u64;
        while ThreadUsage::now().since(start).cpu_us < 30_000 {
            assert!(Instant::now() < deadline, "10 s of spinning counted no 30 ms of CPU");
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }

        let before = ThreadUsage::now();
        std::thread::sleep(std::time::Duration::from_millis(60));
        let slept = ThreadUsage::now().since(before);
        assert!(slept.cpu_us < 30_000, "a 60 ms sleep counted {} µs of CPU", slept.cpu_us);
        assert!(slept.waited >= 1, "a sleep is a voluntary switch: {slept:?}");
    }

    /// Background threads really run nicer, and only the thread that asks does.
    #[cfg(target_os = "linux")]
    #[test]
    fn lower_priority_applies_to_the_calling_thread_only() {
        let before = current_niceness().expect("niceness");
        let lowered = std::thread::spawn(|| {
            let start = current_niceness().expect("niceness");
            let set = lower_priority().expect("lowering priority needs no privilege");
            (start, set, current_niceness().expect("niceness"))
        })
        .join()
        .unwrap();
        assert_eq!(lowered.1, (lowered.0 + BACKGROUND_NICENESS).min(19));
        assert_eq!(lowered.2, lowered.1, "the thread reads back what was set");
        assert!(lowered.2 > lowered.0 || lowered.0 == 19);
        assert_eq!(current_niceness(), Some(before), "the calling test thread is untouched");
    }
}
