//! Integration tests: each starts the real `drainport` binary, talks real TCP
//! on loopback and sends real signals.

mod drain;
mod errors;
mod hostile;
mod http;
/// The HTTP example's modules, for their unit tests (see its `mod.rs`).
mod http_example;
mod kernel;
mod limits;
mod lines;
mod netns;
mod ops;
mod rolling;
mod seed;
mod steer;
mod telnet;
mod util;
