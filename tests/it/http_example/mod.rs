//! The HTTP example's modules, compiled into this crate so that their unit
//! tests run under `cargo test`. Marking the example `test = true` instead
//! would make cargo build it only as a test harness, without the binary
//! that `http.rs` starts.

#[path = "../../../examples/http/body.rs"]
mod body;
#[path = "../../../examples/http/cli.rs"]
mod cli;
#[path = "../../../examples/http/protocol.rs"]
mod protocol;
#[path = "../../../examples/http/request.rs"]
mod request;
#[path = "../../../examples/http/response.rs"]
mod response;
