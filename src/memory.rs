//! glibc allocator tuning: each command picks what suits how it holds events (called
//! first thing in `main`, before other threads start): filters ([`reuse_malloc`]), sinks
//! fed from files ([`sink_malloc`]), servers ([`tame_malloc`]); and a server gives memory
//! back after a burst.

/// Keeps glibc's allocator from holding on to freed memory: commands that keep many
/// events in flight across threads (sinks, servers) call it first. Large blocks (read
/// chunks, encode buffers) are mapped and unmapped rather than left fragmenting the heap,
/// and two arenas stop every thread from growing its own.
pub fn tame_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// For a process whose events flow from files through filters into a sink (`persist`,
/// `pipeline … | persist`): the filters' reuse of large blocks, in one arena. Mapping each
/// read chunk, each batch's rewritten texts and their index afresh cost 400,000 page
/// faults on 2 M events into PostgreSQL, a third of `pipeline`'s CPU time there
/// (task-clock 5.2-5.5 s; reused from the heap, 4.1-4.4 s). Rows wait for their
/// transaction while the filters run on, so the heap holds more than a filter's: with
/// two arenas peak RSS was 65 MiB, with one 58-59 (with [`tame_malloc`]'s mapping, 56-58).
pub fn sink_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
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
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 << 20);
        // Each arena keeps its own free blocks: with one per thread (up to 16 here) the
        // peak RSS of enrich grew from 28 to 39 MiB as the input tripled; with 4, 22-25.
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}
