//! `sluice-perf`, the load generator. Its workloads land with the client SDK.

fn main() {
    eprintln!(
        "sluice-perf {}: the load generator is not built yet; see README.md for what works today",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
