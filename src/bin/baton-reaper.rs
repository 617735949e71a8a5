//! `baton-reaper`: the lean reaper a subagent keeps beside it (see
//! `subagent/relay.rs`); it links only what it needs.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    baton::subagent::relay::main(&args)
}
