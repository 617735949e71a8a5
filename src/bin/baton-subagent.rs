//! `baton-subagent`: `baton subagent` in a binary of its own (see
//! `cli/lean.rs`); `baton subagent` runs it when it lies beside `baton`.

/// mimalloc, as in `baton`: with glibc's malloc a subagent spent about 34
/// µs more of its own CPU per task (`bench throughput`: 218-222 against
/// 184-188 µs), for 0.9 MiB less private memory idle (`bench scale`: a
/// subagent with its reaper 7.6 against 6.0 MiB RSS, still under 10 MiB).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    baton::cli::lean::main()
}
