//! The knobs an operator can turn, with the defaults the README documents.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where the server listens by default (`Config::default().addrs`).
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// The listen backlog: how many finished handshakes wait for `accept`.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// The input cap: the most bytes held for one unfinished message (for a line
/// protocol, the longest line, terminator included).
pub const DEFAULT_MAX_INPUT: usize = 64 * 1024;
/// Unsent output per client above which the server stops reading from it.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;
/// What all clients' buffers together may hold before the largest are
/// closed: 128 MiB, room for about 2,000 clients each holding a whole
/// unfinished 64 KiB line at once, which a process serving its clients'
/// replies as they come is far from needing.
pub const DEFAULT_MAX_BUFFERS: usize = 128 * 1024 * 1024;

/// How one server process runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The addresses to serve, each shared with sibling processes through
    /// `SO_REUSEPORT`: the process opens listeners of its own on every one,
    /// each with its own drain. An IPv6 address means IPv6 only (`[::]:8080`
    /// takes no IPv4 client); list `0.0.0.0:8080` beside it for both.
    ///
    /// When the service manager passes listening sockets (socket
    /// activation, `LISTEN_FDS`), the process serves those instead, and
    /// binds none of these: each of them that no passed socket serves is
    /// named in a line at startup. So one command serves its own addresses
    /// when run by hand and the socket unit's under systemd. Empty means
    /// the passed sockets only; with none passed, starting fails.
    pub addrs: Vec<SocketAddr>,
    /// The `listen(2)` backlog.
    pub backlog: u32,
    /// The input cap: the most bytes held for one unfinished message. A
    /// protocol never sees more at once, and a message that needs more is
    /// refused. For a line protocol, the longest line, terminator included.
    pub max_input: usize,
    /// Unsent output per client above which its input is left unread.
    pub max_output: usize,
    /// What all clients' own buffers may hold together, in bytes: the
    /// unfinished messages they sent and the replies they have not taken,
    /// counted as allocated (capacities, not lengths). When they hold more,
    /// the clients that hold the most are closed, each with the
    /// protocol's last word ([`Protocol::on_evicted`]), until they fit
    /// again; everyone else is served as before, and an idle or ping-pong
    /// client, which holds no buffer, is never among them. The process
    /// logs the closes, at most one line a second. So memory has a
    /// ceiling whatever the clients do: about this plus a fixed margin.
    ///
    /// [`Protocol::on_evicted`]: crate::Protocol::on_evicted
    pub max_buffers: usize,
    /// Stop accepting at this many clients; the rest wait in the backlog.
    pub max_clients: Option<usize>,
    /// How long a drain may last before the remaining clients are closed.
    pub drain_timeout: Option<Duration>,
    /// With `drain_timeout`: close the clients left at the deadline one by
    /// one over this window instead of all at once.
    pub close_spread: Option<Duration>,
    /// Close a client that sent no byte for this long, after the
    /// protocol's last word ([`Protocol::on_idle_timeout`]: for a line
    /// protocol, `error: idle for 30s, closing`), and a wait of a second
    /// at most for its EOF (none while the process is out of
    /// descriptors). Every read re-arms it, at the cost of a comparison
    /// and a store, except on a connection that is already ending: what
    /// such a connection reads is thrown away and keeps nothing alive, so
    /// it is closed one idle period after its last read before the end at
    /// most. Off by default.
    ///
    /// [`Protocol::on_idle_timeout`]: crate::Protocol::on_idle_timeout
    pub idle_timeout: Option<Duration>,
    /// Close a client at once, without a word, when its output has waited
    /// this long without it taking a byte (nginx's `send_timeout`): it is
    /// not reading, and its buffers are freed. Off by default.
    pub send_timeout: Option<Duration>,
    /// A line sent to every client when the drain starts (without `\n`).
    pub drain_notice: Option<String>,
    /// Written once listening, removed at exit.
    pub pid_file: Option<PathBuf>,
    /// Skip the stdout line for each accepted connection, and the one for
    /// each connection the server closes (its idle or send timeout, the
    /// drain's end, the input cap, the buffer budget, the protocol's
    /// close), which are still counted in the status line. On by default:
    /// a server built on the library prints only its lifecycle lines
    /// unless it asks for these (the `drainport` binary does, as its
    /// console session shows).
    pub quiet: bool,
    /// Start every stdout line with the time it was written, in UTC to the
    /// millisecond and followed by a space: `2026-12-02T18:30:00.123Z
    /// Process 4242 running`. For output that goes to a file or a pipe,
    /// where nothing else dates it; journald adds a time of its own. Off by
    /// default, so the lines read exactly as the README shows them. The
    /// setting is one for the whole process: [`serve`](crate::serve) applies
    /// it before its first line.
    pub log_time: bool,
    /// Run every client's input through a telnet filter before the
    /// protocol sees it. Every byte 0xFF (IAC) starts a telnet command, and
    /// no other byte does; commands are taken out of the data:
    ///
    /// - `IAC IAC` is one data byte 0xFF.
    /// - `IAC IP`, `IAC AO` and `IAC EL` (telnet's Ctrl-C among them) drop
    ///   what the protocol has not taken: the line being typed.
    /// - `IAC DO TIMING-MARK` is answered `IAC WILL TIMING-MARK`; any other
    ///   `IAC DO x` gets `IAC WONT x`, and `IAC WILL x` gets `IAC DONT x`.
    ///   The client's own `WONT` and `DONT` get no answer, so no
    ///   negotiation loop can start, and none is ever started.
    /// - `IAC AYT` is answered with the line `[Yes]`.
    /// - Subnegotiations and every other command are dropped.
    ///
    /// An answer goes out after the replies to the data before its command
    /// and before the replies to the data after it. Off by default, so that
    /// a protocol gets its bytes exactly as sent; turn it on for text
    /// protocols that people drive with telnet.
    pub telnet: bool,
    /// The service this process runs, as siblings on the address see it.
    /// `None` means the protocol's type name without module paths (such as
    /// `Lines<Echo>`), so every release of one program is one service
    /// wherever it is installed and whatever its file is called.
    pub service: Option<String>,
    /// Start even when another service already serves the address. By
    /// default the process refuses, so that two different programs of one
    /// user never split a port's clients between them.
    pub join_any: bool,
    /// Take the listening sockets of this running process instead of
    /// opening new ones: a release that closes no listener, so that no
    /// connection queued or in its handshake is reset, on any kernel. The
    /// process must be a drainport of the same user and the same service,
    /// serving every one of `addrs` (each with its port given, not 0), and
    /// must not have handed them over before. It stops accepting once this
    /// process accepts from them, and goes on serving its clients until it
    /// is told to drain. When the takeover cannot happen,
    /// [`serve`](crate::serve) returns the reason before this process
    /// listens anywhere, and the other process keeps serving as before.
    /// Sockets passed by the service manager are served as they are: they
    /// are shared already, and nothing is taken over.
    pub take_over: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addrs: vec![DEFAULT_ADDR],
            backlog: DEFAULT_BACKLOG,
            max_input: DEFAULT_MAX_INPUT,
            max_output: DEFAULT_MAX_OUTPUT,
            max_buffers: DEFAULT_MAX_BUFFERS,
            max_clients: None,
            drain_timeout: None,
            close_spread: None,
            idle_timeout: None,
            send_timeout: None,
            drain_notice: None,
            pid_file: None,
            quiet: true,
            log_time: false,
            telnet: false,
            service: None,
            join_any: false,
            take_over: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_server_is_quiet_unless_it_asks() {
        // A server built on the library prints its lifecycle lines only;
        // the drainport binary asks for a line per connection itself.
        let config = Config::default();
        assert!(config.quiet);
        assert!(!config.log_time && !config.join_any && config.service.is_none());
        // No timers unless asked: holding idle clients is a use.
        assert!(config.idle_timeout.is_none() && config.send_timeout.is_none());
        assert!(config.take_over.is_none());
        assert_eq!(config.addrs, [DEFAULT_ADDR]);
    }
}
