//! The `sip-ha` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() {
    keep_large_blocks_mapped();
    let cli = sip_ha::cli::Cli::parse();
    std::process::exit(sip_ha::commands::dispatch(cli));
}

/// glibc's malloc raises its mmap threshold to the size of each large block
/// freed (up to 32 MiB). After the first 17 MB vector of a 100,000-file
/// manifest is freed, the next ones come from the heap and their pages stay
/// resident once freed: the standby peaked at 68 MiB instead of 52 in
/// bench/sync.sh (poke), over the 64 MiB budget. A fixed threshold keeps
/// every block of 4 MiB or more in a mapping of its own, given back to the
/// system when freed; the 1 MiB file batches stay on the heap.
///
/// Fixing the threshold also fixes the heap's trim threshold, which would
/// stay at 128 KiB: every 1 MiB frame freed at the top of the heap would be
/// handed back and faulted in again (a first copy of the big files took
/// 16.5 s instead of 11.8). It is set to twice the mmap threshold, as
/// glibc's own adjustment would.
fn keep_large_blocks_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: sets two allocator parameters, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}
