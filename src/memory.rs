//! glibc allocator tuning: each command picks what suits how it holds events (its row of
//! [`crate::commands::ALL`] says which; called first thing in `main`, before other
//! threads start): filters ([`reuse_malloc`]),
//! `persist` ([`sink_malloc`]), servers and `pipeline` with a sink ([`tame_malloc`]); and
//! a server gives memory back after a burst.

/// Sets glibc's mmap threshold (blocks this large or larger are mapped, and unmapped when
/// freed), its trim threshold when given (free memory this large at the heap's top is
/// given back) and its number of arenas (threads share them; each keeps its own free
/// blocks).
fn tune(mmap: i32, trim: Option<i32>, arenas: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap);
        if let Some(trim) = trim {
            libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
        }
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (mmap, trim, arenas);
}

/// Keeps glibc's allocator from holding on to freed memory: commands that hold many
/// events across threads while their input runs on (`ingest-http`, `pipeline` with a
/// sink or a server source) call it first. Large blocks (read chunks, encode buffers) are mapped
/// and unmapped rather than left fragmenting the heap, and two arenas stop every thread
/// from growing its own. The blocks every batch needs are recycled ([`crate::pool`]), so
/// they are not mapped and faulted in again.
pub fn tame_malloc() {
    tune(128 * 1024, None, 2);
}

/// For `persist`, a sink reading files: the filters' reuse of large blocks, in one arena.
/// Mapping each read chunk afresh cost 232,000 page faults on 2 M events and a quarter of
/// persist's CPU time; peak RSS went from 24 to 27 MiB. (`pipeline` into persist does not
/// use it: with its filters running on while rows wait, a stalled database held 67 MiB at
/// peak under load, over the 64 MiB it promises; with [`tame_malloc`] and
/// [`crate::pool`], 53-57, and 40,000 page faults on 2 M events instead of 430,000.)
pub fn sink_malloc() {
    tune(1 << 20, Some(2 << 20), 1);
}

/// Hands freed heap memory back to the system. Many small events freed after a burst
/// leave the heap fragmented but mostly empty; glibc only trims its top on its own. A
/// server calls this when a burst has drained (not per request: it walks the heap).
pub fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The opposite tuning, for filters (`validate`, `enrich`) that move every input byte
/// through read chunks and batch buffers of a few hundred KiB: keep those on the heap and
/// reuse them. By default glibc maps each one fresh (and trims the heap back after it),
/// so every 4 KiB page of every batch costs a page fault; that was 20 % of `enrich`.
pub fn reuse_malloc() {
    // Each arena keeps its own free blocks: with one per thread (up to 16 here) the peak
    // RSS of enrich grew from 28 to 39 MiB as the input tripled; with 4, 22-25.
    tune(1 << 20, Some(2 << 20), 4);
}
