//! Compiles `proto/` into Rust types, tonic clients and servers, and the
//! encoded `FileDescriptorSet` that server reflection serves.
//!
//! `protox` parses the protos in pure Rust, so building orderflow needs no
//! system `protoc`.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/orderflow/money/v1/money.proto",
    "proto/orderflow/order/v1/order.proto",
    "proto/orderflow/order/v1/order_service.proto",
    "proto/orderflow/order/v1/order_events.proto",
    "proto/orderflow/payment/v1/payment.proto",
    "proto/orderflow/payment/v1/payment_service.proto",
    "proto/orderflow/payment/v1/payment_events.proto",
    "proto/orderflow/admin/v1/dead_letter_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("orderflow_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    // Type names give every message `prost::Name`, whose full name is the
    // CloudEvents `ce-type` of the events that carry it.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
