//! Generates the gRPC code from `proto/tally/v1/*.proto`. The only build script in the
//! workspace that runs protoc, and it uses the vendored binary so a fresh machine needs
//! no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Read by prost-build when it spawns protoc. Build scripts are single-threaded, so
    // setting the variable here races with nothing.
    std::env::set_var("PROTOC", protoc);
    let files = [
        "proto/tally/v1/licensing.proto",
        "proto/tally/v1/admin.proto",
        "proto/tally/v1/raft.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    // The encoded descriptors too: the server's reflection service (grpcurl) serves them.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("tally_descriptor.bin"))
        .compile_protos(&files, &["proto"])?;
    Ok(())
}
