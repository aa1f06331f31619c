//! The process's allocator: mimalloc, told to hand freed memory back to
//! the OS within 10 ms.
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
}
