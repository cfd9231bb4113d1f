//! Compiles `proto/inference.proto` with protox (a protobuf compiler in Rust, so no `protoc` is needed) and
//! generates the tonic server code for it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/inference.proto");
    let descriptors = protox::compile(["proto/inference.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
