//! The event loop: one `Poll` over the listener, the signal pipe and every
//! client, and the state machine that takes a process from running to
//! draining to exit.
//!
//! Guarantees:
//! - A draining process admits no new client, serves every client it has,
//!   and exits with `Ok` once the last one leaves (at once if it has none).
//! - While a sibling runs, a draining process receives no new SYN, and no
//!   connection that reached it is reset when its listeners close (see
//!   [`crate::listener`] for how).
//! - The check "done, time to exit" lives in [`Server::finished`] only.
//! - Running out of file descriptors, or reaching `max_clients`, pauses
//!   accepting; waiting clients stay in the backlog and the loop never spins.

use std::io;
use std::net::SocketAddr;
use std::process;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::conn::{Conn, Context, Ready, Verdict};
use crate::listener::{Listeners, Protection};
use crate::log::{plural, say};
use crate::notify::Notifier;
use crate::pidfile::PidFile;
use crate::protocol::Protocol;
use crate::slab::Slab;
use crate::spread::Spread;
use crate::steer;
use crate::sys;

/// The signal pipe's token.
const SIGNALS: Token = Token(usize::MAX - 1);
/// Listener `i` (one per online CPU) has token `LISTENERS + i`. Client
/// tokens are slab keys, far below.
const LISTENERS: usize = usize::MAX / 2;
/// Every signal the process handles. The first three start a drain, or
/// stop one hard when it is under way; SIGUSR1 prints a status line.
const HANDLED_SIGNALS: [libc::c_int; 4] = [SIGHUP, SIGTERM, SIGINT, SIGUSR1];

/// Readiness events taken per `epoll_wait`. The buffer's pages are first
/// touched when a batch fills them; 256 entries (3 KiB) fill early in any
/// busy life, where 1024 (12 KiB) first filled in the close storm of a
/// large drain and showed as RSS growth there.
const EVENTS_CAPACITY: usize = 256;
/// Accepts per turn before clients get theirs.
const ACCEPTS_PER_TURN: usize = 256;
/// How long accepting pauses after running out of descriptors or memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long retiring listeners stay open after new SYNs were steered away,
/// for handshakes already in flight on them: one round trip, which on
/// loopback is microseconds and on most networks well under this. Nothing
/// new arrives meanwhile while a sibling runs, so the wait costs no client
/// anything; it only delays the exit of a process that has no clients.
const RETIRE_GRACE: Duration = Duration::from_millis(200);
/// How often a running process tries `accept` without an event. A
/// connection migrated from a closing sibling may not raise one.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// The least time between two progress reports (stdout while draining, and
/// the service manager's STATUS).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Serves `protocol` on `config.addr` until a drain completes.
///
/// Returns `Ok` after a drain (clean or hard-stopped) and `Err` when the
/// server could not start or the poll itself failed; the error's message
/// names what failed.
pub fn serve<P: Protocol>(config: &Config, protocol: P) -> io::Result<()> {
    // Signals are wired first: from here to the last instruction, a SIGHUP,
    // SIGTERM or SIGINT is a message, never a death.
    let signals = Signals::new(HANDLED_SIGNALS)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot install signal handlers: {e}")))?;
    let notifier = Notifier::from_env()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot use NOTIFY_SOCKET: {e}")))?;
    let pid = process::id();
    say!("Process {pid} running");
    sys::raise_fd_limit().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot raise the file descriptor limit: {e}"),
        )
    })?;
    let listeners = Listeners::bind(config.addr, config.backlog)?;
    let addr = listeners.local_addr();
    warn_unprotected(pid, Protection::probe());
    let mut server = Server::new(config, protocol, listeners, signals, notifier)?;
    // Ready means listening: the pid file and READY=1 follow the bind.
    server.pid_file = config
        .pid_file
        .as_deref()
        .map(PidFile::create)
        .transpose()?;
    say!("Process {pid} listening on: {addr}");
    server.notifier.send(format_args!(
        "READY=1\nMAINPID={pid}\nSTATUS=serving, 0 clients"
    ));
    server.run()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// Serving the clients left; `deadline` is when the drain timeout ends it.
    Draining {
        deadline: Option<Instant>,
    },
    /// Closing every client on a schedule.
    Closing(Spread),
}

struct Server<P: Protocol> {
    pid: u32,
    quiet: bool,
    max_clients: Option<usize>,
    drain_timeout: Option<Duration>,
    close_spread: Option<Duration>,
    /// The drain notice, newline included.
    drain_notice: Option<Vec<u8>>,
    poll: Poll,
    signals: Signals,
    notifier: Notifier,
    /// Dropped, and so removed, when the server returns.
    pid_file: Option<PidFile>,
    /// Open until retired at the end of the drain's grace.
    listeners: Option<Listeners>,
    conns: Slab<Conn<TcpStream, P::Conn>>,
    cx: Context<P>,
    state: State,
    /// When the drain started.
    hangup_at: Option<Instant>,
    /// Clients with work left after their turn.
    again: Vec<usize>,
    /// Accepting is paused until then, after running out of descriptors.
    paused_until: Option<Instant>,
    /// An out-of-descriptors episode has been reported, and the queue has
    /// not been emptied since.
    starved: bool,
    /// When a running process next sweeps its accept queue.
    sweep_at: Instant,
    /// When a retiring listener is closed.
    retire_at: Option<Instant>,
    /// The client count last reported, and when the next report may go.
    reported: usize,
    report_at: Instant,
}

impl<P: Protocol> Server<P> {
    fn new(
        config: &Config,
        protocol: P,
        mut listeners: Listeners,
        mut signals: Signals,
        notifier: Notifier,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        listeners.register(poll.registry(), LISTENERS)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let now = Instant::now();
        Ok(Server {
            pid: process::id(),
            quiet: config.quiet,
            max_clients: config.max_clients,
            drain_timeout: config.drain_timeout,
            close_spread: config.close_spread,
            drain_notice: config
                .drain_notice
                .as_ref()
                .map(|text| format!("{text}\n").into_bytes()),
            poll,
            signals,
            notifier,
            pid_file: None,
            listeners: Some(listeners),
            conns: Slab::new(),
            cx: Context::new(protocol, config.max_input, config.max_output)
                .with_telnet(config.telnet),
            state: State::Running,
            hangup_at: None,
            again: Vec::new(),
            paused_until: None,
            starved: false,
            sweep_at: now + SWEEP_INTERVAL,
            retire_at: None,
            reported: 0,
            report_at: now,
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        // Read once per wakeup. Computing the next timeout from a clock read
        // before the batch was handled can only make a sleep end late by that
        // batch's time, never early, so the loop cannot spin on it.
        let mut now = Instant::now();
        while !self.finished() {
            let timeout = self.timeout(now);
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
                    SIGNALS => signals_ready = true,
                    Token(t) if t >= LISTENERS => {
                        if let Some(listeners) = &mut self.listeners {
                            listeners.mark(t - LISTENERS);
                        }
                        listener_ready = true;
                    }
                    Token(key) => self.on_client_event(key, event),
                }
            }
            now = Instant::now();
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

    /// The one place that decides the process is done: draining or closing,
    /// the listener retired, and no client left.
    fn finished(&self) -> bool {
        if self.state == State::Running || self.listeners.is_some() || !self.conns.is_empty() {
            return false;
        }
        match self.state {
            State::Closing(_) => say!("Process {} exiting", self.pid),
            _ => say!("Process {} has no clients left, exiting", self.pid),
        }
        true
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
        self.listeners.is_some()
            && self.paused_until.is_none_or(|until| now >= until)
            && !self.at_client_limit()
    }

    /// Makes the next `accept` try every listener, event or not: for a
    /// sweep, the start of a drain, and retirement.
    fn mark_all_queues(&mut self) {
        if let Some(listeners) = &mut self.listeners {
            listeners.mark_all();
        }
    }

    /// Some listener may hold connections not yet taken.
    fn backlog_waiting(&self) -> bool {
        self.listeners
            .as_ref()
            .is_some_and(|l| l.next_queued().is_some())
    }

    /// Accepts what the marked queues hold, within one turn. Returns true
    /// when every queue was seen empty.
    fn accept(&mut self, now: Instant) -> bool {
        if !self.may_accept(now) {
            return false;
        }
        self.paused_until = None;
        for _ in 0..ACCEPTS_PER_TURN {
            if self.at_client_limit() {
                return false;
            }
            let Some(listeners) = &mut self.listeners else {
                return true;
            };
            let Some(i) = listeners.next_queued() else {
                if self.starved {
                    // The episode ends when everyone who waited has been
                    // taken, not at the first free descriptor: freed
                    // descriptors trickle in, and each would otherwise
                    // start a new episode with a new log line.
                    self.starved = false;
                    say!("Process {} is accepting connections again", self.pid);
                }
                return true;
            };
            match listeners.accept(i) {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if retryable(&e) => {}
                Err(e) => {
                    self.pause_accepting(now, &e);
                    return false;
                }
            }
        }
        !self.backlog_waiting()
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
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
        if let Some(conn) = self.conns.get_mut(key) {
            let verdict = conn.on_connect(&mut self.cx);
            self.apply(key, verdict);
        }
        if self.state != State::Running {
            // Taken from the queue after the drain began: it hears of the
            // drain as everyone else did.
            self.notice(key);
        }
    }

    /// Stops calling `accept` for a while. The connection that could not be
    /// taken stays queued in the kernel, so the client waits instead of
    /// being dropped, and the loop sleeps instead of spinning on it.
    fn pause_accepting(&mut self, now: Instant, err: &io::Error) {
        self.paused_until = Some(now + ACCEPT_PAUSE);
        if !self.starved {
            self.starved = true;
            say!(
                "Process {} cannot accept ({err}); pausing accept, {} client{} connected",
                self.pid,
                self.conns.len(),
                plural(self.conns.len())
            );
        }
    }

    fn on_signals(&mut self, now: Instant) {
        // Empty the pipe first, then act on what arrived, in order. Each
        // signal appears at most once per read of the pipe.
        let mut received = [0; HANDLED_SIGNALS.len()];
        let mut count = 0;
        for signal in self.signals.pending() {
            if count < received.len() {
                received[count] = signal;
                count += 1;
            }
        }
        for &signal in &received[..count] {
            match (signal, self.state) {
                (SIGUSR1, _) => self.print_status(now),
                (_, State::Running) => self.start_drain(signal, now),
                (_, State::Draining { .. }) => {
                    let reason = format!("received {} signal during drain", signal_name(signal));
                    self.close_all(&reason, now, None);
                }
                (_, State::Closing(spread)) => {
                    // Impatience wins over the spread: close the rest now.
                    let left = self.conns.len();
                    say!(
                        "Process {} received {} signal while closing: closing {left} client{} now",
                        self.pid,
                        signal_name(signal),
                        plural(left)
                    );
                    self.state = State::Closing(spread.hurry(now));
                    self.close_due(now);
                }
            }
        }
    }

    fn start_drain(&mut self, signal: libc::c_int, now: Instant) {
        // Steering comes first, so that by the time the operator reads the
        // lines below, new clients go to siblings.
        if let Some(listeners) = &mut self.listeners {
            if let Err(e) = listeners.steer_away() {
                say!(
                    "Process {} cannot steer new connections away ({e}); clients that connect during the drain may be admitted here",
                    self.pid
                );
            }
            // The safety net for SYNs steering could not place elsewhere,
            // where this process may attach it. Without it, such a SYN is
            // admitted during the grace below, so its failure is no news:
            // startup already said whether anything protects the drain.
            let _ = listeners.refuse_syns();
        }
        say!(
            "Process {} received {} signal",
            self.pid,
            signal_name(signal)
        );
        say!("process {} closing tasks: {}", self.pid, self.conns.len());
        self.state = State::Draining {
            // A timeout too long for the clock to hold means no deadline.
            deadline: self.drain_timeout.and_then(|t| now.checked_add(t)),
        };
        self.hangup_at = Some(now);
        self.reported = self.conns.len();
        self.report_at = now + PROGRESS_INTERVAL;
        self.notifier.send(format_args!(
            "STOPPING=1\nSTATUS=draining, {} client{} left",
            self.conns.len(),
            plural(self.conns.len())
        ));
        for key in 0..self.conns.key_bound() {
            self.notice(key);
        }
        self.retire_at = Some(now + RETIRE_GRACE);
        // What is queued already reached this process: serve it.
        self.mark_all_queues();
        self.accept(now);
    }

    /// Tells one client the drain started: the drain notice, if there is
    /// one, then whatever the protocol says.
    fn notice(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            let verdict = conn.on_drain(self.drain_notice.as_deref(), &mut self.cx);
            self.apply(key, verdict);
        }
    }

    /// Closes the listener once its queue is empty; retries later if
    /// accepting is paused, so that no queued connection is reset.
    fn retire(&mut self, now: Instant) {
        self.mark_all_queues();
        if self.accept(now) {
            self.close_listeners();
        } else {
            self.retire_at = Some(now + ACCEPT_PAUSE.min(RETIRE_GRACE));
        }
    }

    /// The last step of retirement: out of the poll, then closed.
    fn close_listeners(&mut self) {
        if let Some(mut listeners) = self.listeners.take() {
            listeners.deregister(self.poll.registry());
        }
        self.retire_at = None;
    }

    /// Ends the drain: every client gets the protocol's closing line and is
    /// closed, all now, or evenly over `spread`.
    fn close_all(&mut self, reason: &str, now: Instant, spread: Option<Duration>) {
        // Take what is still queued so those clients get the line too.
        self.paused_until = None;
        self.mark_all_queues();
        while self.listeners.is_some() && !self.accept(now) && self.paused_until.is_none() {}
        self.close_listeners();
        let total = self.conns.len();
        match spread {
            Some(spread) => say!(
                "Process {} {reason}: closing {total} client{} over {}s",
                self.pid,
                plural(total),
                spread.as_secs_f64()
            ),
            None => say!(
                "Process {} {reason}: closing {total} client{}",
                self.pid,
                plural(total)
            ),
        }
        self.state = State::Closing(Spread::new(now, spread.unwrap_or_default(), total));
        self.close_due(now);
    }

    /// Closes the clients the spread schedule says are due by `now`.
    fn close_due(&mut self, now: Instant) {
        let State::Closing(spread) = self.state else {
            return;
        };
        // Clients that left by themselves count as closed.
        let closed = spread.total().saturating_sub(self.conns.len());
        let mut to_close = spread.due(now).saturating_sub(closed);
        // By index rather than by a collected list of keys: a drain must
        // not allocate.
        for key in 0..self.conns.key_bound() {
            if to_close == 0 {
                break;
            }
            if let Some(conn) = self.conns.remove(key) {
                conn.close_hard(&mut self.cx);
                to_close -= 1;
            }
        }
    }

    /// When the next spread close is due.
    fn next_close(&self) -> Option<Instant> {
        let State::Closing(spread) = self.state else {
            return None;
        };
        spread.next(spread.total().saturating_sub(self.conns.len()))
    }

    fn print_status(&self, now: Instant) {
        let state = match self.state {
            State::Running => "running",
            State::Draining { .. } => "draining",
            State::Closing(_) => "closing",
        };
        let since = match self.hangup_at {
            Some(at) => format!("{:.1}s", now.saturating_duration_since(at).as_secs_f64()),
            None => "-".to_owned(),
        };
        let c = &self.cx.counters;
        say!(
            "Process {} status: state={state} clients={} accepted={} lines={} bytes_in={} bytes_out={} since_hangup={since}",
            self.pid,
            self.conns.len(),
            c.accepted,
            c.lines,
            c.bytes_in,
            c.bytes_out
        );
    }

    /// Reports a changed client count at most once per interval: to stdout
    /// while draining, and to the service manager always.
    fn report_progress(&mut self, now: Instant) {
        let clients = self.conns.len();
        if !self.progress_wanted() || now < self.report_at {
            return;
        }
        self.reported = clients;
        self.report_at = now + PROGRESS_INTERVAL;
        if self.state == State::Running {
            self.notifier.send(format_args!(
                "STATUS=serving, {clients} client{}",
                plural(clients)
            ));
        } else {
            // The same word as the status line's state: after the deadline
            // the clients left are being closed, not waited for.
            let phase = match self.state {
                State::Closing(_) => "closing",
                _ => "draining",
            };
            // At 0 the exit line follows, and says it.
            if clients > 0 {
                say!(
                    "Process {} {phase}: {clients} client{} left",
                    self.pid,
                    plural(clients)
                );
            }
            self.notifier.send(format_args!(
                "STATUS={phase}, {clients} client{} left",
                plural(clients)
            ));
        }
    }

    /// A changed client count is worth reporting: while draining always,
    /// while running only to a service manager that listens.
    fn progress_wanted(&self) -> bool {
        self.conns.len() != self.reported
            && (self.state != State::Running || self.notifier.is_active())
    }

    fn on_timers(&mut self, now: Instant) {
        if self.retire_at.is_some_and(|at| now >= at) {
            self.retire(now);
        }
        match self.state {
            State::Draining {
                deadline: Some(deadline),
            } if now >= deadline => {
                let reason = format!(
                    "reached its drain timeout of {}s",
                    self.drain_timeout.unwrap_or_default().as_secs_f64()
                );
                self.close_all(&reason, now, self.close_spread);
            }
            State::Closing(_) => self.close_due(now),
            _ => {}
        }
        self.report_progress(now);
        if self.state == State::Running && now >= self.sweep_at {
            self.sweep_at = now + SWEEP_INTERVAL;
            self.mark_all_queues();
        }
        if self.backlog_waiting() && self.may_accept(now) {
            self.accept(now);
        }
    }

    /// How long the next poll may sleep: not at all when work is waiting,
    /// otherwise until the nearest timer.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || (self.backlog_waiting() && self.may_accept(now)) {
            return Some(Duration::ZERO);
        }
        let deadline = match self.state {
            State::Draining { deadline } => deadline,
            _ => None,
        };
        let sweep = (self.state == State::Running).then_some(self.sweep_at);
        let report = self.progress_wanted().then_some(self.report_at);
        [
            self.paused_until,
            self.retire_at,
            deadline,
            sweep,
            report,
            self.next_close(),
        ]
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

/// Says once, at startup, when nothing keeps new clients away from a
/// draining process, with the consequence and the fix.
fn warn_unprotected(pid: u32, protection: Protection) {
    let kernel = match steer::kernel_version() {
        Some((major, minor)) => format!("Linux {major}.{minor}"),
        None => "this kernel".to_owned(),
    };
    let (major, minor) = steer::STEERING_KERNEL;
    match protection {
        Protection::Steering => {}
        Protection::FilterOnly => say!(
            "Process {pid}: {kernel} cannot steer new connections away from a draining process \
             (Linux {major}.{minor} or later can); they are dropped instead, so a client that \
             connects during a drain waits about a second"
        ),
        Protection::None => say!(
            "Process {pid}: nothing keeps new connections away from a draining process: \
             {kernel} cannot steer them (Linux {major}.{minor} or later can) and the SYN filter \
             needs CAP_NET_ADMIN; clients that connect during a drain may be reset. \
             Run Linux {major}.{minor} or later, or grant CAP_NET_ADMIN"
        ),
    }
}
