//! How ferry allocates: mimalloc for Rust's allocations, and glibc's malloc (which ONNX Runtime's C++ code uses)
//! set up to give big blocks back at once.

/// mimalloc instead of glibc malloc for Rust's allocations: request buffers are allocated on the async runtime's
/// threads and freed on the inference threads (and back), and glibc's arena locks made that cross-thread traffic
/// the top of the profile.
///
/// Built without transparent huge pages (libmimalloc-sys's `no_thp`): mimalloc otherwise asks for them
/// (`MADV_HUGEPAGE`) on the arena it commits up front, and every 2 MiB region it touched once became resident whole,
/// however little of it was in use. Measured serving the MLP fixture: 29 MiB of private memory idle and 33 MiB under
/// load with them, 13 and 16 without, at the same throughput (a request's heap is small; the TLB gains nothing).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ONNX Runtime's allocations go to glibc's malloc, whose thresholds move by themselves: after a big mapped block
/// is freed, glibc raises its mmap threshold to that block's size (up to 32 MiB) and its trim threshold to twice
/// that. From then on a model's weights and the buffers it is loaded through come from the threads' arenas instead
/// of mappings of their own, and freed at the top of a thread's arena they stay resident (`malloc_trim` does not
/// shrink those). Measured with 20 models of 16 MiB of weights each: 950 MiB resident while loaded (the load
/// buffers kept) and, after they unloaded, up to 1.5 × the resident set before. Fixed thresholds keep every block
/// of 1 MiB and up in its own mapping, unmapped when freed: 430 MiB loaded, and at most 1.11 × after.
pub(crate) fn configure_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[expect(unsafe_code, reason = "mallopt is a C function; no safe binding exists")]
    // SAFETY: `mallopt` only sets glibc's own parameters; it runs first in `main`, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
    }
}

/// Returns the calling thread's free mimalloc pages to the system, frees the segments ended threads abandoned once
/// their blocks are all freed, and purges the arenas at once: an instance thread calls it as it ends, the thread
/// that joins stopped instances after them, and an idle runtime thread now and then, so that a model scaled to zero
/// or unloaded gives its memory back.
#[expect(unsafe_code, reason = "mi_collect is a C function; the mimalloc crate has no safe binding for it")]
pub(crate) fn mimalloc_collect() {
    // SAFETY: `mi_collect` takes no pointer and only touches mimalloc's own state.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
