//! The process's allocator: mimalloc, told to hand freed memory back to
//! the OS within 10 ms, and on small pages in every role but the API.
//!
//! Every request and every job allocates many small, short-lived objects
//! across threads; glibc's malloc showed as ~12% of CPU in the API and the
//! worker (see the README's Performance section).
//!
//! mimalloc 3 keeps freed pages resident for a second before it purges
//! them. The embedded `chat serve` frees tens of MiB a second (a search
//! index commit builds its segment in memory), so that second held 60 to
//! 100 MiB of freed pages: 150 to 200 MiB of anonymous memory, against 85
//! to 115 MiB with a 10 ms delay. An immediate purge saved 15 MiB more but
//! cost the embedded API 10 to 30% more CPU per POST; 10 ms cost none
//! that the bench could see.
//!
//! mimalloc asks the kernel for transparent huge pages on its arena (it
//! calls `madvise(MADV_HUGEPAGE)`), and a kernel in `always` mode gives
//! them unasked. A 2 MiB page is resident whole as soon as one byte of it
//! is, and it is only freed whole: with allocations that come and go by
//! the million, most huge pages held little that was live. `chat serve`
//! peaked at 175 to 194 MiB with them, 130 to 135 MiB without, and the
//! worker at 62 MiB against 31 (see the README's Performance, round
//! eleven). So every role refuses them, but the API: its heap is small
//! (42 MiB with them), and without them it spent 7% more CPU per POST,
//! likely on the TLB misses they save.
use std::ffi::{c_int, c_long};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e`; libmimalloc-sys
/// names only the older options.
const PURGE_DELAY: c_int = 15;

/// Milliseconds a freed page stays resident.
const PURGE_AFTER_MS: c_long = 10;

/// Call first thing in `main`, before the runtime's threads start.
pub(crate) fn purge_freed_memory_promptly() {
    // SAFETY: sets a plain integer option; mimalloc reads it on each purge.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_AFTER_MS) }
}

/// Call in `main` before the runtime starts: pages touched from then on
/// are small ones, whatever mimalloc asked for. The few touched before may
/// already be huge.
pub(crate) fn refuse_transparent_huge_pages() {
    // SAFETY: sets a flag on this process's memory map; no pointer passed.
    // The result is ignored: a kernel too old for the flag keeps giving
    // pages as it did, which costs memory, not correctness.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index is the only tie to mimalloc.h: its shipped default, one
    /// second, says it still names the purge delay.
    #[test]
    fn the_option_set_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 1000);
    }

    /// Memory the allocator hands out, once written, sits on small pages.
    /// Pages touched before the refusal may be huge, so the test counts
    /// only what writing its own block adds.
    #[cfg(target_os = "linux")]
    #[test]
    fn allocations_are_not_backed_by_huge_pages() {
        refuse_transparent_huge_pages();
        // Big enough to span many 2 MiB pages of mimalloc's arena.
        const SIZE: usize = 32 << 20;
        let mut block: Vec<u8> = Vec::with_capacity(SIZE);
        let at = block.as_ptr() as usize;
        let before = huge_kb_of_mapping_holding(at);
        block.resize(SIZE, 1);
        let after = huge_kb_of_mapping_holding(at);
        drop(block);
        assert_eq!(
            after.saturating_sub(before),
            0,
            "writing the block made huge pages"
        );
    }

    /// `AnonHugePages` of the mapping in `/proc/self/smaps` that holds
    /// `address`.
    fn huge_kb_of_mapping_holding(address: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or_default();
            if let Some((from, to)) = range.split_once('-')
                && let (Ok(from), Ok(to)) = (
                    usize::from_str_radix(from, 16),
                    usize::from_str_radix(to, 16),
                )
            {
                inside = (from..to).contains(&address);
            } else if inside && let Some(kb) = line.strip_prefix("AnonHugePages:") {
                return kb.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
        panic!("no mapping holds {address:#x}");
    }
}
