//! The build script: stamps each build of the crate with an id
//! (`CRATE_BUILD_ID`: not `BATON_...`, which `cargo test` passes on to the
//! processes it runs, and Baton's configuration would read), so `baton` uses the lean binaries beside it
//! (`baton-subagent`, `baton-reaper`) only when they come from the same
//! build: `cargo run` builds `baton` alone and leaves older ones there.

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    println!(
        "cargo:rustc-env=CRATE_BUILD_ID={nanos}-{}",
        std::process::id()
    );
}
