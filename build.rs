//! Generates the worker protocol's code (`shipsec.worker.v1`) from `proto/`: protox
//! parses the .proto files in Rust (no `protoc` needed), tonic-prost-build writes the
//! messages and the client and server into OUT_DIR.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["shipsec/worker/v1/worker.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
