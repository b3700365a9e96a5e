//! Integration tests: each starts the real `drainport` binary, talks real TCP
//! on loopback and sends real signals.

mod activation;
mod addresses;
mod claims;
mod closes;
mod console_session;
mod delay;
/// The delay bed, shared with the delay benchmark; the benchmark's report
/// uses parts the tests do not.
#[allow(dead_code)]
#[path = "../../benches/delaybed/mod.rs"]
mod delaybed;
mod drain;
mod errors;
mod help;
mod hostile;
mod http;
/// The HTTP example's modules, for their unit tests (see its `mod.rs`).
mod http_example;
mod http_timeouts;
mod install;
mod kernel;
/// The kv example, for its unit test. Marked `test = true`, the example
/// would be built only as a test harness, without the binary that
/// `telnet.rs` starts; here its `main` goes unused.
#[allow(dead_code)]
#[path = "../../examples/kv.rs"]
mod kv_example;
mod limits;
mod lines;
mod log_time;
mod nc;
mod netns;
mod ops;
mod pidfile;
mod rolling;
mod rolling_trust;
mod runner;
mod sandbox;
mod startup;
mod stats;
mod steer;
mod takeover;
/// Client-socket probes shared with the rolling benchmark.
#[path = "../../benches/shared/tcp.rs"]
mod tcp;
mod telnet;
mod timeouts;
mod util;
