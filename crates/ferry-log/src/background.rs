//! Threads for the log's upkeep (dedupe spills and filter rebuilds, freeing big
//! allocations, preallocating the next chunk). They run at a low CPU priority: their work
//! is never urgent, and on a busy core it must not take whole time slices from the appends
//! and requests that share it. When the writer does have to wait for one (a spill it
//! needs, say) the writer sleeps, so the core is free and the job gets it.

use std::io::{self, Read, Write};
use std::thread::JoinHandle;

/// Bytes a background job reads or writes per system call. One call for megabytes runs
/// in the kernel for milliseconds, and a request that wakes meanwhile on the same core
/// waits for it: with a 5 MB dedupe run written at once, the runtime worker waited 6 ms
/// (perf sched, sync=always at half load). A call returns to user space every slice, and
/// the job yields there.
const IO_SLICE: usize = 256 * 1024;

/// How much of a contended core a background job gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// Nice 10, about a tenth of the core against one busy thread: for the dedupe
    /// index's jobs, which must keep up under load. The writer waits for a spill once the
    /// index's memory is full, lookups check every filter a lagging rebuild leaves frozen,
    /// and freed filters stay resident until their thread runs. Measured with the HTTP
    /// benchmark's batches on one core, nice 19 for spills made the writer wait at every
    /// spill and added 20 MB to the peak RSS; nice 0 doubled the p99 at half load.
    Low,
    /// Nice 19, the lowest: for work nothing waits for (the spare chunk).
    Lowest,
}

impl Priority {
    fn nice(self) -> i32 {
        match self {
            Priority::Low => 10,
            Priority::Lowest => 19,
        }
    }
}

/// Start a named thread that first lowers its own priority, then runs `job`.
pub(crate) fn spawn<T, F>(name: &str, priority: Priority, job: F) -> io::Result<JoinHandle<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        lower_priority(priority.nice());
        // A new thread starts with its creator's priority and may have preempted it; a
        // lowered priority alone does not hand the core back before the slice ends.
        std::thread::yield_now();
        job()
    })
}

/// `write_all` in [`IO_SLICE`] pieces, yielding the core between them.
pub(crate) fn write_all(file: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    for slice in bytes.chunks(IO_SLICE) {
        file.write_all(slice)?;
        std::thread::yield_now();
    }
    Ok(())
}

/// `read_to_end` in [`IO_SLICE`] pieces, yielding the core between them.
pub(crate) fn read_to_end(file: &mut impl Read, out: &mut Vec<u8>) -> io::Result<()> {
    while file.by_ref().take(IO_SLICE as u64).read_to_end(out)? > 0 {
        std::thread::yield_now();
    }
    Ok(())
}

/// Lower the calling thread's priority to `nice`, never raise it (a process started at
/// a higher nice keeps it). On Linux the nice value belongs to the thread, not the
/// process; elsewhere setting it would slow the whole process, so it is left alone.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let thread = Some(rustix::thread::gettid());
        let current = rustix::process::getpriority_process(thread).unwrap_or(0);
        if current >= nice {
            return;
        }
        if let Err(error) = rustix::process::setpriority_process(thread, nice) {
            tracing::debug!(%error, nice, "cannot lower a background thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// This thread's nice value, for tests.
#[cfg(all(test, target_os = "linux"))]
fn current_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(i32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn background_threads_run_at_their_priority_and_the_caller_keeps_its_own() {
        let before = current_nice();
        for priority in [Priority::Low, Priority::Lowest] {
            let inside = spawn("ferry-test-bg", priority, current_nice).unwrap().join().unwrap();
            assert_eq!(inside, priority.nice().max(before), "{priority:?}");
        }
        assert_eq!(current_nice(), before, "the spawning thread's priority changed");
    }

    #[test]
    fn the_job_runs_and_its_result_comes_back() {
        assert_eq!(spawn("ferry-test-bg", Priority::Lowest, || 6 * 7).unwrap().join().unwrap(), 42);
    }
}
