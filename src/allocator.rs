//! Keeping freed activation memory inside the process, so that the next batch reuses it instead
//! of faulting fresh pages in from the kernel.
//!
//! Every forward and backward pass allocates activation buffers of tens to hundreds of MB and
//! frees them before the next batch. glibc's malloc serves blocks that large with `mmap` and
//! unmaps them on free, so every batch page-faults each page in again and the kernel zeroes it
//! first. `perf` of a ViT-B/32 forward at batch 32 put 5% of all samples in the kernel's
//! `clear_page` alone, and `perf stat` counted 2.4 million page faults for a batch-64 benchmark.
//! Raising malloc's mmap threshold above the largest activation, and its trim threshold so the
//! freed heap is not handed back, lets batches reuse the same pages: 432 thousand faults, and the
//! forward went from 17.9 to 20.0 images/s (BENCHMARKS.md, "What changed the numbers").
//!
//! Threads other than the main one allocate from secondary arenas, whose heaps glibc caps at
//! 64 MB: a larger block there is mmap-backed whatever the threshold. The SQL path adapts on
//! tokio's blocking threads with batches whose MLP activations exceed that (256 images of the
//! default model: 105 MB), so the call also limits malloc to the main arena. On the demo that
//! cut page faults from 1.5–3.4 million to 0.12 million and CLIPTTA's time from 35.3–39.7 s to
//! 33.0–33.4 s. The cost, one lock for all threads' allocations, did not show on this
//! machine's 2 cores.
//!
//! This is process-wide malloc configuration, so the library never applies it on its own: the
//! `cliptta` command and the examples call [`retain_freed_memory`] first thing, and a program
//! that embeds the crate can do the same (or set the equivalent `GLIBC_TUNABLES`). The price is
//! that memory freed after a batch stays with the process until it exits: resident memory stays
//! at its peak instead of falling between batches (the peak itself did not change).
//! `CLIPTTA_RETAIN_FREED_MEMORY=0` leaves malloc as it is.
//!
//! Only glibc has these knobs; elsewhere the call does nothing. The alternatives measured worse
//! on the same benchmark: jemalloc 16.9 and mimalloc 15.2–16.8 images/s (both also return
//! blocks this large to the kernel).

/// Above the largest activation of the shapes this crate benchmarks (a ViT-B/16 MLP at batch
/// 128 is 310 MB), so they all come from malloc's heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 30;

/// Freed memory at the top of the heap is returned to the kernel only beyond this much: 2 GiB,
/// the largest value `mallopt` takes (an `int`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;

/// One arena: the main one, whose heap has no size cap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: libc::c_int = 1;

/// Set to `0` to leave malloc as it is: a process that must hand memory back between batches
/// (and the before/after measurement of this setting) runs that way.
pub const OPT_OUT: &str = "CLIPTTA_RETAIN_FREED_MEMORY";

/// Makes malloc keep large freed blocks for reuse instead of returning them to the kernel.
/// Returns whether the setting took effect: glibc only, and not when [`OPT_OUT`] is `0`.
///
/// Call it once, early, before threads start allocating.
///
/// ```
/// let applied = cliptta::allocator::retain_freed_memory();
/// let opted_out = std::env::var(cliptta::allocator::OPT_OUT).is_ok_and(|v| v == "0");
/// assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")) && !opted_out);
/// ```
pub fn retain_freed_memory() -> bool {
    if std::env::var_os(OPT_OUT).is_some_and(|v| v == "0") {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only updates malloc's parameters (under its own lock); the values
        // are within the ranges glibc accepts and it reports a refusal by returning 0.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
        let arenas = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) };
        let applied = mmap == 1 && trim == 1 && arenas == 1;
        if !applied {
            tracing::debug!(mmap, trim, arenas, "malloc refused a setting; large blocks may stay mmap-backed");
        }
        applied
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    fn thread_faults() -> i64 {
        // SAFETY: getrusage writes one rusage struct, which we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        assert_eq!(rc, 0, "getrusage");
        usage.ru_minflt
    }

    /// Faults taken by allocating and filling `bytes`, then freeing them.
    fn faults_of_one_buffer(bytes: usize) -> i64 {
        let before = thread_faults();
        let buf = std::hint::black_box(vec![1u8; bytes]);
        drop(buf);
        thread_faults() - before
    }

    /// After the call, a second buffer of the same (large) size reuses the first one's pages:
    /// it takes a small fraction of the page faults that filling fresh memory costs. 48 MB is
    /// above glibc's largest automatic mmap threshold (32 MB), so without the setting every
    /// such buffer would be a fresh mapping (12,288 faults of 4 KiB pages).
    ///
    /// Measured in a fresh process of this test binary running only this test: in the shared
    /// harness, the thread may be handed a secondary arena that other tests fragmented, whose
    /// 64 MB heaps cannot hold the buffer, and the result then depends on test timing.
    #[test]
    fn a_freed_large_buffer_is_reused_without_page_faults() {
        const CHILD: &str = "CLIPTTA_ALLOCATOR_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let exe = std::env::current_exe().unwrap();
            let out = std::process::Command::new(exe)
                .args(["allocator::tests::a_freed_large_buffer_is_reused_without_page_faults", "--exact", "--test-threads=1", "--nocapture"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        assert!(retain_freed_memory(), "glibc accepts the thresholds (and {OPT_OUT} is not 0)");
        let bytes = 48 << 20;
        std::thread::spawn(move || {
            let first = faults_of_one_buffer(bytes);
            let second = faults_of_one_buffer(bytes);
            let pages = (bytes / 4096) as i64;
            assert!(second < pages / 10, "the second fill reuses the first's pages: {second} faults for {pages} pages (first {first})");
        })
        .join()
        .unwrap();
    }
}
