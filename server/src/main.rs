//! `tallyd` entry point. Thin by design: parse flags, set up logging, call the library.

fn main() {
    eprintln!(
        "tallyd {}: the Raft cluster is not built yet (see the issue tracker)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
