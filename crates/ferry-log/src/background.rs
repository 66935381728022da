//! Threads for the log's upkeep (dedupe spills and filter rebuilds, freeing big
//! allocations, preallocating the next chunk). They run at the lowest CPU priority: their
//! work is never urgent, and on a busy core it must not delay the appends and requests
//! that share it. When the writer does have to wait for one (a spill it needs, say) the
//! writer sleeps, so the core is free and the job gets it.

use std::io;
use std::thread::JoinHandle;

/// The nice value of background threads (the lowest priority).
const NICE: i32 = 19;

/// Start a named thread that first lowers its own priority, then runs `job`.
pub(crate) fn spawn<T, F>(name: &str, job: F) -> io::Result<JoinHandle<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        lower_priority();
        // A new thread starts with its creator's priority and may have preempted it; a
        // lowered priority alone does not hand the core back before the slice ends.
        std::thread::yield_now();
        job()
    })
}

/// Lower the calling thread's priority. On Linux the nice value belongs to the thread, not
/// the process; elsewhere setting it would slow the whole process, so it is left alone.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE) {
        tracing::debug!(%error, "cannot lower a background thread's priority");
    }
}

/// This thread's nice value, for tests.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn current_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(i32::MIN)
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn background_threads_run_at_the_lowest_priority_and_the_caller_keeps_its_own() {
        let before = super::current_nice();
        let inside = super::spawn("ferry-test-bg", super::current_nice).unwrap().join().unwrap();
        assert_eq!(inside, super::NICE);
        assert_eq!(super::current_nice(), before, "the spawning thread's priority changed");
    }

    #[test]
    fn the_job_runs_and_its_result_comes_back() {
        assert_eq!(super::spawn("ferry-test-bg", || 6 * 7).unwrap().join().unwrap(), 42);
    }
}
