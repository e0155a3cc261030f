//! Measures what reading a role (and a common name) from a client certificate costs: the
//! per-call work the server's role cache saves. The figure BENCHMARKS.md quotes comes
//! from this; run it in release mode:
//!
//! ```sh
//! cargo run --release -p tally-pki --example role_parse_cost -- 100000
//! ```

use std::time::Instant;

fn main() -> Result<(), tally_pki::Error> {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let ca = tally_pki::Ca::generate("site", 1)?;
    let der = ca
        .issue(tally_pki::Role::Client, "ws1.example.com", &[], 1)?
        .cert_der()?;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(tally_pki::role_of(std::hint::black_box(&der))?);
        std::hint::black_box(tally_pki::common_name(std::hint::black_box(&der)));
    }
    let per_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!(
        "{{\"parses\":{n},\"cert_bytes\":{},\"us_per_role_and_name\":{per_us:.2}}}",
        der.len()
    );
    Ok(())
}
