//! drainport: a TCP server for zero-downtime releases.
//!
//! A service runs as several processes sharing one port through
//! `SO_REUSEPORT`, or one listening socket that the service manager holds
//! and passes to each (socket activation). To release, start the new
//! processes and send `SIGHUP` to the old ones. A process that gets
//! `SIGHUP` stops admitting clients, keeps serving the ones it has, and
//! exits when the last one leaves. No session is cut and no connection is
//! reset.
//!
//! This crate is the drain machinery and knows nothing of any particular
//! protocol: implement [`Protocol`] (bytes in, replies out, with state per
//! connection) and pass it to [`serve`]. A line protocol implements
//! [`LineProtocol`] and is served through [`Lines`].
//!
//! ```no_run
//! use drainport::{Action, Config, LineProtocol, Lines};
//!
//! struct Upper;
//!
//! impl LineProtocol for Upper {
//!     fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action {
//!         out.extend(line.iter().map(u8::to_ascii_uppercase));
//!         Action::Continue
//!     }
//! }
//!
//! if let Err(e) = drainport::serve(&Config::default(), Lines(Upper)) {
//!     // One line, naming the `Config` field at fault, if any.
//!     eprintln!("upper: {e}");
//!     std::process::exit(1);
//! }
//! ```
//!
//! [`serve`] runs the process until its drain ends: it takes over
//! `SIGHUP`, `SIGTERM`, `SIGINT` and `SIGUSR1`, and writes its log lines to
//! stdout (its doc has the list). Linux only. The crate is not on
//! crates.io; depend on a checkout:
//!
//! ```toml
//! [dependencies]
//! drainport = { path = "../drainport" }
//! ```

#![deny(missing_docs)]
// Every `unsafe` block is in `sys`, one per system call, each with the
// SAFETY note clippy asks for; the rest of the crate calls the safe
// functions there (tests may allow their own raw calls).
#![deny(unsafe_code)]

mod activation;
mod admission;
mod backlog;
mod budget;
mod claim;
mod clients;
mod closes;
mod config;
mod conn;
mod control;
mod deadline_queue;
mod drain;
#[cfg(feature = "flags")]
pub mod flags;
mod handshakes;
mod kernel;
mod listener;
mod log;
mod notify;
mod peer;
mod pidfile;
mod protection;
pub mod protocol;
mod server;
mod setting;
mod slab;
mod sockdiag;
mod spread;
pub mod stats;
#[allow(unsafe_code)]
#[deny(clippy::undocumented_unsafe_blocks)]
mod sys;
mod takeover;
mod telnet;
#[cfg(test)]
mod test_rng;
mod timeouts;

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub use clients::fuzzing;
pub use config::{
    Config, DEFAULT_ADDR, DEFAULT_BACKLOG, DEFAULT_MAX_BUFFERS, DEFAULT_MAX_INPUT,
    DEFAULT_MAX_OUTPUT,
};
pub use peer::Peer;
pub use protocol::{Action, LineProtocol, Lines, Protocol, Step};
pub use server::serve;

/// This library's version, and the commit it was built from when built
/// from git: `0.1.0+git.1a2b3c4d5e6f`, with `.dirty` when the sources
/// differed from it (`build.rs`). `drainport -V` prints it.
pub const VERSION: &str = env!("DRAINPORT_VERSION");
pub use setting::{Setting, SettingError};
