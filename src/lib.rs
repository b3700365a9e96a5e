//! drainport: a TCP server for zero-downtime releases.
//!
//! A service runs as several processes sharing one port through
//! `SO_REUSEPORT`. To release, start the new processes and send `SIGHUP` to
//! the old ones. A process that gets `SIGHUP` stops admitting clients, keeps
//! serving the ones it has, and exits when the last one leaves. No session is
//! cut and no connection is reset.
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
//! drainport::serve(&Config::default(), Lines(Upper)).unwrap();
//! ```

#![deny(missing_docs)]

mod admission;
mod claim;
mod config;
mod conn;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod handshakes;
mod listener;
mod log;
mod notify;
mod pidfile;
pub mod protocol;
mod server;
mod slab;
mod spread;
mod steer;
mod sys;
mod telnet;

pub use config::{Config, DEFAULT_ADDR, DEFAULT_BACKLOG, DEFAULT_MAX_INPUT, DEFAULT_MAX_OUTPUT};
pub use protocol::{Action, LineProtocol, Lines, Protocol, Step};

/// Serves `protocol` on `config.addr` until a drain completes.
///
/// Returns `Ok` after a drain (clean or hard-stopped) and `Err` when the
/// server could not start or the poll itself failed; the error's message
/// names what failed. A failure after the listeners started listening
/// comes only after the clients that reached them were served, so that a
/// broken start resets no connection.
///
/// Every stdout line is dated from here on if `config.log_time` says so:
/// the setting is the process's, not this call's.
pub fn serve<P: Protocol>(config: &Config, protocol: P) -> std::io::Result<()> {
    log::set_time(config.log_time);
    server::serve(config, protocol)
}
