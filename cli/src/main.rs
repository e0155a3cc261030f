//! `tallyctl` entry point. The admin commands arrive with the client/CLI issue.

fn main() {
    eprintln!(
        "tallyctl {}: not built yet (see the issue tracker)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
