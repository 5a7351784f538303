//! `sluice`, the command-line tool. Its commands (cluster, topic, spu, produce, consume) land with
//! the SPU data path and the client SDK.

fn main() {
    eprintln!(
        "sluice {}: the command-line tool is not built yet; see README.md for what works today",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
