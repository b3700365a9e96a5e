//! The knobs an operator can turn, with the defaults the README documents.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Where the server listens when no address is given.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// The listen backlog: how many finished handshakes wait for `accept`.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// The longest line, terminator included.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// Unsent output per client above which the server stops reading from it.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;

/// How one server process runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address shared with sibling processes through `SO_REUSEPORT`.
    pub addr: SocketAddr,
    /// The `listen(2)` backlog.
    pub backlog: u32,
    /// The longest line accepted, terminator included.
    pub max_line: usize,
    /// Unsent output per client above which its input is left unread.
    pub max_output: usize,
    /// Stop accepting at this many clients; the rest wait in the backlog.
    pub max_clients: Option<usize>,
    /// How long a drain may last before the remaining clients are closed.
    pub drain_timeout: Option<Duration>,
    /// Skip the stdout line for each accepted connection.
    pub quiet: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: DEFAULT_ADDR,
            backlog: DEFAULT_BACKLOG,
            max_line: DEFAULT_MAX_LINE,
            max_output: DEFAULT_MAX_OUTPUT,
            max_clients: None,
            drain_timeout: None,
            quiet: false,
        }
    }
}
