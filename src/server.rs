//! The event loop: one `Poll` over the listener, the signal pipe and every
//! client, and the state machine that takes a process from running to
//! draining to exit.
//!
//! Guarantees:
//! - A draining process admits no new client, serves every client it has,
//!   and exits with `Ok` once the last one leaves (at once if it has none).
//! - No connection that reached this process is reset when its listener
//!   closes (see [`crate::listener`] for how).
//! - The check "draining and nothing left" lives in [`Server::finished`] only.
//! - Running out of file descriptors, or reaching `max_clients`, pauses
//!   accepting; waiting clients stay in the backlog and the loop never spins.

use std::io;
use std::net::SocketAddr;
use std::process;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::conn::{Conn, Context, Ready, Verdict};
use crate::listener::Listener;
use crate::log::say;
use crate::protocol::Protocol;
use crate::slab::Slab;
use crate::sys;

/// The listening socket's token.
const LISTENER: Token = Token(usize::MAX - 1);
/// The signal pipe's token. Client tokens are slab keys, far below both.
const SIGNALS: Token = Token(usize::MAX - 2);
/// Signals that start a drain, or stop one hard when it is under way.
const STOP_SIGNALS: [libc::c_int; 3] = [SIGHUP, SIGTERM, SIGINT];

/// Readiness events taken per `epoll_wait`.
const EVENTS_CAPACITY: usize = 1024;
/// Accepts per turn before clients get theirs.
const ACCEPTS_PER_TURN: usize = 256;
/// How long accepting pauses after running out of descriptors or memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long a retiring listener waits for handshakes in flight to finish.
/// On loopback a handshake's last ACK follows the SYN-ACK within
/// microseconds; this leaves room for a loaded machine.
const RETIRE_GRACE: Duration = Duration::from_millis(50);
/// How often a running process tries `accept` without an event. A
/// connection migrated from a closing sibling may not raise one.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Serves `protocol` on `config.addr` until a drain completes.
///
/// Returns `Ok` after a drain (clean or hard-stopped) and `Err` when the
/// server could not start or the poll itself failed; the error's message
/// names what failed.
pub fn serve<P: Protocol>(config: &Config, protocol: P) -> io::Result<()> {
    // Signals are wired first: from here to the last instruction, a SIGHUP,
    // SIGTERM or SIGINT is a message, never a death.
    let signals = Signals::new(STOP_SIGNALS)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot install signal handlers: {e}")))?;
    let pid = process::id();
    say!("Process {pid} running");
    sys::raise_fd_limit().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot raise the file descriptor limit: {e}"),
        )
    })?;
    let listener = Listener::bind(config.addr, config.backlog)?;
    say!("Process {pid} listening on: {}", listener.local_addr());
    Server::new(config, protocol, listener, signals)?.run()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Draining {
        deadline: Option<Instant>,
    },
    /// Every client has been closed on a hard stop.
    Stopped,
}

struct Server<P> {
    pid: u32,
    quiet: bool,
    max_clients: Option<usize>,
    drain_timeout: Option<Duration>,
    poll: Poll,
    signals: Signals,
    listener: Option<Listener>,
    conns: Slab<Conn>,
    cx: Context<P>,
    state: State,
    /// Clients with work left after their turn.
    again: Vec<usize>,
    /// The accept queue may hold connections not yet taken.
    backlog_waiting: bool,
    /// Accepting is paused until then, after running out of descriptors.
    paused_until: Option<Instant>,
    /// An out-of-descriptors episode has been reported and not yet ended.
    starved: bool,
    /// When a running process next sweeps its accept queue.
    sweep_at: Instant,
    /// When a retiring listener is closed.
    retire_at: Option<Instant>,
}

impl<P: Protocol> Server<P> {
    fn new(
        config: &Config,
        protocol: P,
        mut listener: Listener,
        mut signals: Signals,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Server {
            pid: process::id(),
            quiet: config.quiet,
            max_clients: config.max_clients,
            drain_timeout: config.drain_timeout,
            poll,
            signals,
            listener: Some(listener),
            conns: Slab::new(),
            cx: Context::new(protocol, config.max_line, config.max_output),
            state: State::Running,
            again: Vec::new(),
            backlog_waiting: false,
            paused_until: None,
            starved: false,
            sweep_at: Instant::now() + SWEEP_INTERVAL,
            retire_at: None,
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        while !self.finished() {
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut listener_ready = false;
            let mut signals_ready = false;
            for event in &events {
                match event.token() {
                    LISTENER => listener_ready = true,
                    SIGNALS => signals_ready = true,
                    Token(key) => self.on_client_event(key, event),
                }
            }
            let now = Instant::now();
            if listener_ready {
                self.accept(now);
            }
            if signals_ready {
                self.on_signals(now);
            }
            self.run_again();
            self.on_timers(now);
            self.conns.recycle();
        }
        Ok(())
    }

    /// The one place that decides the process is done.
    fn finished(&self) -> bool {
        match self.state {
            State::Running => false,
            State::Draining { .. } => {
                if self.listener.is_some() || !self.conns.is_empty() {
                    return false;
                }
                say!("Process {} has no clients left, exiting", self.pid);
                true
            }
            State::Stopped => true,
        }
    }

    fn on_client_event(&mut self, key: usize, event: &Event) {
        // An event for a client closed earlier in this batch finds an empty
        // slot: slots are reused only after the batch.
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let verdict = conn.on_ready(Ready::from(event), &mut self.cx);
        self.apply(key, verdict);
    }

    fn apply(&mut self, key: usize, verdict: Verdict) {
        match verdict {
            Verdict::Keep => {}
            Verdict::Again => self.again.push(key),
            // Closing the socket also removes it from the epoll set: its
            // descriptor is never duplicated, so this is the last close.
            Verdict::Close => drop(self.conns.remove(key)),
        }
    }

    /// Gives clients that used up their turn another one.
    fn run_again(&mut self) {
        let mut again = std::mem::take(&mut self.again);
        for key in again.drain(..) {
            if let Some(conn) = self.conns.get_mut(key) {
                let verdict = conn.pump(&mut self.cx);
                self.apply(key, verdict);
            }
        }
        // Keep the vector's allocation unless new work arrived meanwhile.
        if self.again.is_empty() {
            self.again = again;
        }
    }

    fn at_client_limit(&self) -> bool {
        self.state == State::Running && self.max_clients.is_some_and(|max| self.conns.len() >= max)
    }

    fn may_accept(&self, now: Instant) -> bool {
        self.listener.is_some()
            && self.paused_until.is_none_or(|until| now >= until)
            && !self.at_client_limit()
    }

    /// Accepts what the queue holds, within one turn. Returns true when the
    /// queue was seen empty.
    fn accept(&mut self, now: Instant) -> bool {
        if !self.may_accept(now) {
            self.backlog_waiting = true;
            return false;
        }
        self.paused_until = None;
        for _ in 0..ACCEPTS_PER_TURN {
            if self.at_client_limit() {
                self.backlog_waiting = true;
                return false;
            }
            let Some(listener) = &self.listener else {
                return true;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.backlog_waiting = false;
                    return true;
                }
                Err(e) if retryable(&e) => {}
                Err(e) => {
                    self.pause_accepting(now, &e);
                    return false;
                }
            }
        }
        self.backlog_waiting = true;
        false
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if self.starved {
            self.starved = false;
            say!("Process {} is accepting connections again", self.pid);
        }
        let key = self.conns.vacant_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            say!(
                "Process {} cannot watch connection from {peer}: {e}",
                self.pid
            );
            return;
        }
        self.conns.insert(Conn::new(stream));
        self.cx.counters.accepted += 1;
        if !self.quiet {
            say!("Process {} accepted connection from: {peer}", self.pid);
        }
    }

    /// Stops calling `accept` for a while. The connection that could not be
    /// taken stays queued in the kernel, so the client waits instead of
    /// being dropped, and the loop sleeps instead of spinning on it.
    fn pause_accepting(&mut self, now: Instant, err: &io::Error) {
        self.paused_until = Some(now + ACCEPT_PAUSE);
        self.backlog_waiting = true;
        if !self.starved {
            self.starved = true;
            say!(
                "Process {} cannot accept ({err}); pausing accept, {} clients connected",
                self.pid,
                self.conns.len()
            );
        }
    }

    fn on_signals(&mut self, now: Instant) {
        // Empty the pipe first, then act on what arrived, in order.
        let mut received = [0; STOP_SIGNALS.len()];
        let mut count = 0;
        for signal in self.signals.pending() {
            if count < received.len() {
                received[count] = signal;
                count += 1;
            }
        }
        for &signal in &received[..count] {
            match self.state {
                State::Running => self.start_drain(signal, now),
                State::Draining { .. } => {
                    let reason = format!("received {} signal during drain", signal_name(signal));
                    self.hard_stop(&reason, now);
                }
                State::Stopped => {}
            }
        }
    }

    fn start_drain(&mut self, signal: libc::c_int, now: Instant) {
        say!(
            "Process {} received {} signal",
            self.pid,
            signal_name(signal)
        );
        say!("process {} closing tasks: {}", self.pid, self.conns.len());
        if let Some(listener) = &self.listener {
            if let Err(e) = listener.refuse_syns() {
                say!(
                    "Process {} cannot filter new connections ({e}); handshakes in flight when the listener closes may be reset",
                    self.pid
                );
            }
        }
        self.state = State::Draining {
            deadline: self.drain_timeout.map(|t| now + t),
        };
        self.retire_at = Some(now + RETIRE_GRACE);
        // What is queued already reached this process: serve it.
        self.accept(now);
    }

    /// Closes the listener once its queue is empty; retries later if
    /// accepting is paused, so that no queued connection is reset.
    fn retire(&mut self, now: Instant) {
        if self.accept(now) {
            if let Some(mut listener) = self.listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
            self.retire_at = None;
        } else {
            self.retire_at = Some(now + ACCEPT_PAUSE.min(RETIRE_GRACE));
        }
    }

    /// Ends the drain now: every client gets the protocol's closing line.
    fn hard_stop(&mut self, reason: &str, now: Instant) {
        // Take what is still queued so those clients get the line too.
        self.paused_until = None;
        while self.listener.is_some() && !self.accept(now) && self.paused_until.is_none() {}
        self.listener = None;
        say!(
            "Process {} {reason}: closing {} clients",
            self.pid,
            self.conns.len()
        );
        let keys: Vec<usize> = self.conns.keys().collect();
        for key in keys {
            if let Some(conn) = self.conns.remove(key) {
                conn.close_with_notice(&mut self.cx);
            }
        }
        say!("Process {} exiting", self.pid);
        self.state = State::Stopped;
    }

    fn on_timers(&mut self, now: Instant) {
        if self.retire_at.is_some_and(|at| now >= at) {
            self.retire(now);
        }
        if let State::Draining {
            deadline: Some(deadline),
        } = self.state
        {
            if now >= deadline {
                let reason = format!(
                    "reached its drain timeout of {}s",
                    self.drain_timeout.unwrap_or_default().as_secs_f64()
                );
                self.hard_stop(&reason, now);
                return;
            }
        }
        let sweep = self.state == State::Running && now >= self.sweep_at;
        if sweep {
            self.sweep_at = now + SWEEP_INTERVAL;
        }
        if (sweep || self.backlog_waiting) && self.may_accept(now) {
            self.accept(now);
        }
    }

    /// How long the next poll may sleep: not at all when work is waiting,
    /// otherwise until the nearest timer.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || (self.backlog_waiting && self.may_accept(now)) {
            return Some(Duration::ZERO);
        }
        let deadline = match self.state {
            State::Draining { deadline } => deadline,
            _ => None,
        };
        let sweep = (self.state == State::Running).then_some(self.sweep_at);
        [self.paused_until, self.retire_at, deadline, sweep]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }
}

/// Accept errors that concern one connection only: try the next.
fn retryable(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) || err.raw_os_error() == Some(libc::EPROTO)
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        SIGHUP => "hangup",
        SIGTERM => "terminate",
        SIGINT => "interrupt",
        _ => "unexpected",
    }
}
