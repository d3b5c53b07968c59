//! The C library's allocator, set so the agent's memory stays what its buffers need
//! (docs/DESIGN.md §8 "Memory").
//!
//! glibc serves every block below its mmap threshold from its arenas, and raises the threshold
//! to the size of each larger block it frees (up to 32 MiB). The install's 1–2 MiB buffers
//! (decoded frames, fetched parts, read-back blocks) are made on one thread and freed on
//! another: after the first is freed they come from per-thread arenas, which keep what is freed
//! (peak RSS 42–52 MiB for a 1 GiB image, against 26 MiB with the threshold fixed). The
//! threshold is fixed by `MALLOC_MMAP_THRESHOLD_`, read when the process starts (`mallopt`
//! would be unsafe code, which the workspace forbids), so the agent runs itself again once
//! with it set. Another C library ignores the variable.

use std::os::unix::process::CommandExt;

/// glibc's variable, and the value: its default threshold, kept fixed.
const VAR: &str = "MALLOC_MMAP_THRESHOLD_";
const THRESHOLD: &str = "131072";

/// Re-executes this program with the threshold fixed, unless it already is (or was set by
/// whoever started it). Returns only when it is set, or when the program cannot be run again
/// (then it carries on as it is: only its memory use differs).
pub fn fix_mmap_threshold() {
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // `exec` returns only when it failed.
    let _ = command.args(args).env(VAR, THRESHOLD).exec();
}
