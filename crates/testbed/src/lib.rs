//! What drainport's benchmarks (`benches/`) and integration tests
//! (`tests/it/`) share. None of it is part of the library or the binary;
//! it is a crate of its own so that every bench target and the test crate
//! depend on one copy, and so that `cargo test` tests it without running a
//! benchmark.
//!
//! - [`report`]: a command's output for a report's header, and one marked
//!   section of a shared report file replaced
//! - [`num`]: numbers as the reports print them
//! - [`tcp`]: a client socket pinned to a CPU, and its SYN retransmits
//! - [`claim`]: a drainport's claim on an address, found in
//!   `/proc/net/unix`, and a connection to its control channel
//! - [`activate`]: listening sockets passed to a child as a service manager
//!   passes them
//! - [`mistake`]: an operator's mistake refused as every program here
//!   refuses one
//! - [`system`]: what the benchmarks ask of the system: the processes
//!   they start, `/proc`, clocks, the descriptor limit, the machine's
//!   description
//! - [`delaybed`]: rolling restarts over long round trips, in network
//!   namespaces joined by a relay

pub mod activate;
pub mod claim;
pub mod delaybed;
pub mod mistake;
pub mod num;
pub mod report;
pub mod system;
pub mod tcp;
