//! The event loop: one `Poll` over the listeners, the signal pipe and every
//! client, and the state machine that takes a process from running to
//! draining to exit. Which clients come in, and when the listeners close,
//! is [`crate::admission`]'s to decide.
//!
//! Guarantees:
//! - A draining process admits no new client, serves every client it has,
//!   and exits with `Ok` once the last one leaves and its listeners are
//!   retired (at the end of the handshake window if it has no client).
//! - While a sibling runs, a draining process receives no new SYN, and no
//!   connection that reached it is reset when its listeners close (see
//!   [`crate::listener`] and [`crate::admission`] for how).
//! - The check "done, time to exit" lives in [`Server::finished`] only.
//! - Every timer comes from one list, [`Server::timers`], so the poll
//!   sleeps until the nearest one and never past it. The per-connection
//!   ones are one entry there, [`Timer::Deadlines`], kept by
//!   [`crate::timeouts`].

use std::io;
use std::net::SocketAddr;
use std::process;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

use crate::activation;
use crate::admission::{Accept, Admission};
use crate::budget::{Classes, Report, Share, Size};
use crate::claim::{self, Claim, Conflict};
use crate::config::Config;
use crate::conn::{Conn, Context, Ready, Verdict};
use crate::listener::{Listeners, Origin};
use crate::log::{Escaped, plural, say};
use crate::notify::Notifier;
use crate::pidfile::PidFile;
use crate::protection;
use crate::protocol::Protocol;
use crate::slab::Slab;
use crate::spread::Spread;
use crate::sys;
use crate::timeouts::{Before, Timeouts};

/// The signal pipe's token.
const SIGNALS: Token = Token(usize::MAX - 1);
/// Listener `i` (of every address, one per online CPU each, or as passed)
/// has token `LISTENERS + i`. Client tokens are slab keys, far below.
const LISTENERS: usize = usize::MAX / 2;
/// Every signal the process handles. The first three start a drain, or
/// stop one hard when it is under way; SIGUSR1 prints a status line.
const HANDLED_SIGNALS: [libc::c_int; 4] = [SIGHUP, SIGTERM, SIGINT, SIGUSR1];

/// Readiness events taken per `epoll_wait`. The buffer's pages are first
/// touched when a batch fills them; 256 entries (3 KiB) fill early in any
/// busy life, where 1024 (12 KiB) first filled in the close storm of a
/// large drain and showed as RSS growth there.
const EVENTS_CAPACITY: usize = 256;
/// The least time between two progress reports (stdout while draining, and
/// the service manager's STATUS).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Serves `protocol` on `config.addrs` (or on the sockets the service
/// manager passes) until a drain completes.
///
/// Returns `Ok` after a drain (clean or hard-stopped) and `Err` when the
/// server could not start or the poll itself failed; the error's message
/// names what failed. A failure after the listeners started listening
/// comes only after the clients that reached them were served, so that a
/// broken start resets no connection.
///
/// It runs the process, not just a socket, until it returns:
/// - it takes over `SIGHUP`, `SIGTERM`, `SIGINT` and `SIGUSR1` for the
///   whole process (through signal-hook, first thing, and for good): the
///   first three start the drain and a second one stops it hard, `SIGUSR1`
///   prints a status line;
/// - it writes its log lines to stdout (see the README's "What it prints";
///   one per accepted client unless `config.quiet`, which is the default),
///   each dated if `config.log_time` says so, a setting of the process;
/// - it raises the soft `RLIMIT_NOFILE` to the hard limit;
/// - it takes the listening sockets the service manager passed to it
///   (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, as `sd_listen_fds(3)`
///   reads them) and unsets those variables; call it while no other thread
///   reads or writes the environment;
/// - it asks the kernel whether it steers new connections by CPU tag, with
///   a few connections on a loopback port of its own (about 0.2 ms), and
///   says what protects its release;
/// - it announces its service on each address, as an abstract Unix socket,
///   and refuses an address another service serves (`Config::service`,
///   `Config::join_any`);
/// - with `NOTIFY_SOCKET` set, it reports readiness and the drain to
///   systemd.
///
/// Linux only: it needs `SO_REUSEPORT`. What protects a release on this
/// kernel (steering by CPU tag, shared sockets, `tcp_migrate_req`) is found
/// out at startup and said in one line.
pub fn serve<P: Protocol>(config: &Config, protocol: P) -> io::Result<()> {
    crate::log::set_time(config.log_time);
    // Signals are wired first: from here to the last instruction, a SIGHUP,
    // SIGTERM or SIGINT is a message, never a death.
    let signals = Signals::new(HANDLED_SIGNALS)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot install signal handlers: {e}")))?;
    let notifier = Notifier::from_env()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot use NOTIFY_SOCKET: {e}")))?;
    let pid = process::id();
    say!("Process {pid} running");
    // Taken before anything else: the variables are unset, and the
    // descriptors marked close-on-exec, whatever happens next.
    let passed = activation::take()?;
    sys::raise_fd_limit().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot raise the file descriptor limit: {e}"),
        )
    })?;
    // Whatever can fail is done before the first listen(2): from then on,
    // clients can queue on this process, and dropping its listeners would
    // reset them. The pid file is written now and only renamed into place
    // once listening. (Passed sockets listen already, but a failure here
    // only closes this process's copies of them.)
    let pid_file = config
        .pid_file
        .as_deref()
        .map(PidFile::prepare)
        .transpose()?;
    let listeners = Listeners::open(&config.addrs, passed)?;
    say_origins(pid, &listeners, &config.addrs);
    let mut claims = Vec::new();
    for port in listeners.ports() {
        claims.extend(claim_address::<P>(config, port.addr)?);
    }
    protection::report(pid, listeners.ports());
    let addrs: Vec<SocketAddr> = listeners.ports().iter().map(|p| p.addr).collect();
    let mut server = Server::new(config, protocol, listeners, signals, notifier)?;
    server.claims = claims;
    let started = server
        .admission
        .listen(config.backlog)
        .and_then(|()| pid_file.map(|p| p.commit()).transpose());
    match started {
        Ok(pid_file) => server.pid_file = pid_file,
        Err(e) => return server.fail(e),
    }
    // Ready means listening: the pid file and READY=1 follow the listen.
    for addr in addrs {
        say!("Process {pid} listening on: {addr}");
    }
    server.notifier.send(format_args!(
        "READY=1\nMAINPID={pid}\nSTATUS=serving, 0 clients"
    ));
    server.run()
}

/// Says where each passed socket came from, one line each, and which
/// configured addresses they stand in for.
fn say_origins(pid: u32, listeners: &Listeners, configured: &[SocketAddr]) {
    let ports = listeners.ports();
    for port in ports.iter().filter(|p| p.origin == Origin::Passed) {
        let also = if port.dual_stack { ", IPv4 too" } else { "" };
        for (fd, name) in &port.passed_as {
            say!(
                "Process {pid} takes fd {fd} ({name}) from the service manager: {}{also}",
                port.addr
            );
        }
    }
    if ports.iter().any(|p| p.origin == Origin::Passed) {
        for addr in configured
            .iter()
            .filter(|a| !ports.iter().any(|p| p.addr == **a))
        {
            say!(
                "Process {pid} does not bind {addr}: it serves the sockets the service manager passed"
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// Serving the clients left; `deadline` is when the drain timeout ends it.
    Draining {
        deadline: Option<Instant>,
    },
    /// Closing every client on a schedule: the hard stop.
    Closing(Spread),
}

/// The loop's timers. Both the poll's timeout and the firing come from
/// [`Server::timers`], so no timer can wake the loop without being run, or
/// be due without waking it.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// Admission's own: a sweep, a look at handshakes in flight, the end
    /// of an accept pause, or clients waiting to be taken.
    Admission,
    /// The drain timeout.
    DrainDeadline,
    /// The next close of a spread hard stop.
    SpreadClose,
    /// The next progress report.
    Progress,
    /// The nearest per-connection deadline: idle, send or the protocol's.
    Deadlines,
    /// The next line about clients closed for the buffer budget.
    Evictions,
}

struct Server<P: Protocol> {
    pid: u32,
    quiet: bool,
    drain_timeout: Option<Duration>,
    close_spread: Option<Duration>,
    /// The drain notice, newline included.
    drain_notice: Option<Vec<u8>>,
    poll: Poll,
    signals: Signals,
    notifier: Notifier,
    /// Dropped, and so removed, when the server returns.
    pid_file: Option<PidFile>,
    /// This process's announcements of the service it runs on its addresses.
    claims: Vec<Claim>,
    admission: Admission,
    conns: Slab<Conn<TcpStream, P::Conn>>,
    cx: Context<P>,
    /// The connections with buffers of their own, by size, to close the
    /// largest when the buffers are over their budget.
    classes: Classes,
    /// Clients closed for the budget, for the log and the status line.
    evicted: Report,
    /// Every connection's deadlines.
    timeouts: Timeouts,
    state: State,
    /// When the drain started.
    hangup_at: Option<Instant>,
    /// Clients with work left after their turn.
    again: Vec<usize>,
    /// The client count last reported, and when the next report may go.
    reported: usize,
    report_at: Instant,
}

impl<P: Protocol> Server<P> {
    fn new(
        config: &Config,
        protocol: P,
        listeners: Listeners,
        mut signals: Signals,
        notifier: Notifier,
    ) -> io::Result<Self> {
        let pid = process::id();
        let poll = Poll::new()?;
        let now = Instant::now();
        let admission = Admission::new(
            pid,
            listeners,
            poll.registry(),
            LISTENERS,
            config.max_clients,
            now,
        )?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Server {
            pid,
            quiet: config.quiet,
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
            claims: Vec::new(),
            admission,
            conns: Slab::new(),
            cx: Context::new(protocol, config.max_input, config.max_output)
                .with_telnet(config.telnet)
                .with_budget(config.max_buffers),
            classes: Classes::default(),
            evicted: Report::default(),
            timeouts: Timeouts::new(config, now),
            state: State::Running,
            hangup_at: None,
            again: Vec::new(),
            reported: 0,
            report_at: now,
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        // Read once per wakeup, before the batch: it dates the clients'
        // turns and decides the timers. Timers then fire, and the next sleep
        // ends, late by at most that batch's time, never early, so the loop
        // cannot spin on them.
        let mut now = Instant::now();
        while !self.finished() {
            let timeout = self.timeout(now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // Turns are dated with the time the loop woke, not the time it
            // went to sleep: an idle deadline counts from the read.
            now = Instant::now();
            self.timeouts.woke(now);
            self.admission.new_turn();
            let mut listener_ready = false;
            let mut signals_ready = false;
            for event in &events {
                match event.token() {
                    SIGNALS => signals_ready = true,
                    Token(t) if t >= LISTENERS => {
                        self.admission.mark(t - LISTENERS);
                        listener_ready = true;
                    }
                    Token(key) => self.on_client_event(key, event),
                }
            }
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
        match self.state {
            State::Closing(_) => say!("Process {} exiting", self.pid),
            _ => say!("Process {} has no clients left, exiting", self.pid),
        }
        Ok(())
    }

    /// Starting failed after the listeners began to listen: they may hold
    /// clients, so retire them as a drain does, serve whoever reached this
    /// process, and only then report `err`.
    fn fail(mut self, err: io::Error) -> io::Result<()> {
        say!(
            "Process {} cannot start ({err}); serving the clients that reached it before exiting",
            self.pid
        );
        let now = Instant::now();
        let _ = self.admission.retire(now);
        self.state = State::Draining { deadline: None };
        self.hangup_at = Some(now);
        self.accept(now);
        self.run()?;
        Err(err)
    }

    /// The one place that decides the process is done: draining or closing,
    /// the listeners retired, and no client left.
    fn finished(&self) -> bool {
        self.state != State::Running && self.admission.is_closed() && self.conns.is_empty()
    }

    fn on_client_event(&mut self, key: usize, event: &Event) {
        // An event for a client closed earlier in this batch finds an empty
        // slot: slots are reused only after the batch.
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let before = Before::take(&self.cx);
        let verdict = conn.on_ready(Ready::from(event), &mut self.cx);
        self.apply(key, verdict, before);
    }

    /// Acts on the verdict of a connection's turn; `before` is what the
    /// counters said before it, for its timeouts.
    fn apply(&mut self, key: usize, verdict: Verdict, before: Before) {
        match verdict {
            Verdict::Keep => {}
            Verdict::Again => self.again.push(key),
            Verdict::Close => {
                self.remove(key);
                return;
            }
        }
        if let Some(conn) = self.conns.get_mut(key) {
            self.timeouts.after_turn(key, conn, &self.cx, before);
            if conn.has_buffers() {
                self.count_buffers(key);
            }
        }
    }

    /// After the turn of a connection with buffers of its own: counts
    /// them, and closes the largest if all buffers are over their budget.
    /// The only place the budget can be passed: what is held grows only
    /// when it is counted.
    fn count_buffers(&mut self, key: usize) {
        self.file_buffers(key);
        if self.cx.budget.over() {
            self.evict();
        }
    }

    /// Counts a connection's buffers and files it under its size class.
    fn file_buffers(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(class) = conn.count_buffers() else {
            return;
        };
        let stamp = self.classes.file(key, class);
        if let Some(share) = conn.share_mut() {
            share.filed(class, stamp);
        }
        if self.classes.crowded(self.cx.budget.shares()) {
            let conns = &self.conns;
            self.classes.compact(|k| filed_stamp(conns, k));
        }
    }

    /// Closes the connections that hold the most, largest class first,
    /// until the buffers fit their budget again. Each is taken from
    /// [`Classes`] in O(1) amortized, and filed again (at its new, small
    /// size) once its buffers are gone; one taken again while ending is
    /// closed, so the loop ends.
    fn evict(&mut self) {
        while self.cx.budget.over() {
            let conns = &self.conns;
            let Some(key) = self.classes.pop(|k| filed_stamp(conns, k)) else {
                break;
            };
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let first = !conn.is_ending();
            let held = conn.share().map_or(0, Share::counted);
            if let Some(share) = conn.share_mut() {
                share.unfile();
            }
            let before = Before::take(&self.cx);
            let verdict = conn.evict(&mut self.cx);
            if first {
                self.evicted.closed(held);
            }
            match verdict {
                Verdict::Keep => {}
                Verdict::Again => self.again.push(key),
                Verdict::Close => {
                    self.remove(key);
                    continue;
                }
            }
            if let Some(conn) = self.conns.get_mut(key) {
                self.timeouts.after_turn(key, conn, &self.cx, before);
            }
            self.file_buffers(key);
        }
    }

    /// Says how many clients were closed for the budget since the last
    /// such line, at most once per interval.
    fn report_evictions(&mut self, now: Instant) {
        if let Some(closed) = self.evicted.take(now) {
            say!(
                "Process {} is over its budget for client buffers ({}): closed {} client{} holding the most, {} in all",
                self.pid,
                Size(self.cx.budget.limit()),
                closed.clients,
                plural(closed.clients),
                Size(closed.bytes)
            );
        }
    }

    /// Takes a connection out of the table, with its timers. Closing the
    /// socket (dropping what this returns) also removes it from the epoll
    /// set: its descriptor is never duplicated, so that is the last close.
    fn remove(&mut self, key: usize) -> Option<Conn<TcpStream, P::Conn>> {
        let conn = self.conns.remove(key)?;
        self.timeouts.forget(key);
        Some(conn)
    }

    /// Acts on the per-connection deadlines that passed.
    fn on_deadlines(&mut self, now: Instant) {
        self.timeouts
            .short_of_descriptors(self.admission.is_starved());
        let fired = self.timeouts.expire(now);
        for &(key, kind) in &fired {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let before = Before::take(&self.cx);
            let verdict = self.timeouts.fire(key, kind, conn, &mut self.cx);
            self.apply(key, verdict, before);
        }
        self.timeouts.done(fired);
    }

    /// Gives clients that used up their turn another one.
    fn run_again(&mut self) {
        let mut again = std::mem::take(&mut self.again);
        for key in again.drain(..) {
            if let Some(conn) = self.conns.get_mut(key) {
                let before = Before::take(&self.cx);
                let verdict = conn.pump(&mut self.cx);
                self.apply(key, verdict, before);
            }
        }
        // Keep the vector's allocation unless new work arrived meanwhile.
        if self.again.is_empty() {
            self.again = again;
        }
    }

    /// Admits what admission hands over, and returns why it stopped.
    fn accept(&mut self, now: Instant) -> Accept {
        loop {
            match self.admission.accept(self.conns.len(), now) {
                Accept::Client(stream, peer) => self.admit(stream, peer),
                stop => return stop,
            }
        }
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
        self.timeouts.admitted(key);
        self.cx.counters.accepted += 1;
        if !self.quiet {
            say!("Process {} accepted connection from: {peer}", self.pid);
        }
        if let Some(conn) = self.conns.get_mut(key) {
            let before = Before::take(&self.cx);
            let verdict = conn.on_connect(peer, &mut self.cx);
            self.apply(key, verdict, before);
        }
        if self.state != State::Running {
            // Taken from the queue after the drain began: it hears of the
            // drain as everyone else did.
            self.notice(key);
        }
    }

    fn on_signals(&mut self, now: Instant) {
        // Empty the pipe first, then act. signal-hook reports each pending
        // signal once per read, by signal number rather than by arrival, so
        // the handled signals fit this array; two different stop signals in
        // one read count as two (a drain, then a hard stop).
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
        if let Err(e) = self.admission.retire(now) {
            say!(
                "Process {} cannot steer new connections away ({e}); clients that connect during the drain may be admitted here",
                self.pid
            );
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
        // What is queued already reached this process: serve it.
        self.accept(now);
    }

    /// Tells one client the drain started: the drain notice, if there is
    /// one, then whatever the protocol says.
    fn notice(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            let before = Before::take(&self.cx);
            let verdict = conn.on_drain(self.drain_notice.as_deref(), &mut self.cx);
            self.apply(key, verdict, before);
        }
    }

    /// Ends the drain: every client gets the protocol's closing line and is
    /// closed, all now, or evenly over `spread`.
    fn close_all(&mut self, reason: &str, now: Instant, spread: Option<Duration>) {
        // Take what is still queued so those clients get the line too. If
        // accepting is paused, what is left queued is reset by the close:
        // a hard stop does not wait for descriptors.
        self.admission.stop_now(now);
        self.accept(now);
        self.admission.close();
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
            if let Some(conn) = self.remove(key) {
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
            "Process {} status: state={state} clients={} accepted={} lines={} bytes_in={} bytes_out={} buffers={} evicted={} since_hangup={since}",
            self.pid,
            self.conns.len(),
            c.accepted,
            c.lines,
            c.bytes_in,
            c.bytes_out,
            self.cx.budget.held(),
            self.evicted.total()
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

    /// Every timer with when it is next due. The one list both the poll's
    /// timeout and [`Server::on_timers`] are derived from.
    fn timers(&self, now: Instant) -> [(Timer, Option<Instant>); 6] {
        let deadline = match self.state {
            State::Draining { deadline } => deadline,
            _ => None,
        };
        [
            (Timer::Admission, self.admission.due(self.conns.len(), now)),
            (Timer::DrainDeadline, deadline),
            (Timer::SpreadClose, self.next_close()),
            (
                Timer::Progress,
                self.progress_wanted().then_some(self.report_at),
            ),
            (Timer::Deadlines, self.timeouts.next_due()),
            (Timer::Evictions, self.evicted.due(now)),
        ]
    }

    fn on_timers(&mut self, now: Instant) {
        for (timer, at) in self.timers(now) {
            if at.is_some_and(|at| at <= now) {
                self.fire(timer, now);
            }
        }
    }

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Admission => {
                self.admission
                    .on_timer(self.conns.len(), now, self.cx.spare_buffer());
                self.accept(now);
            }
            Timer::DrainDeadline => {
                if let State::Draining { .. } = self.state {
                    let reason = format!(
                        "reached its drain timeout of {}s",
                        self.drain_timeout.unwrap_or_default().as_secs_f64()
                    );
                    self.close_all(&reason, now, self.close_spread);
                }
            }
            Timer::SpreadClose => self.close_due(now),
            Timer::Progress => self.report_progress(now),
            Timer::Deadlines => self.on_deadlines(now),
            Timer::Evictions => self.report_evictions(now),
        }
    }

    /// How long the next poll may sleep: not at all when a client has work
    /// left, otherwise until the nearest timer.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() {
            return Some(Duration::ZERO);
        }
        self.timers(now)
            .into_iter()
            .filter_map(|(_, at)| at)
            .min()
            .map(|at| at.saturating_duration_since(now))
    }
}

/// Announces the service this process runs on `addr`, and refuses to go on
/// when another service of this uid already serves it (unless
/// `config.join_any`). Comes after the bind and before the listen, so
/// refusing resets nothing. Where the announcement cannot be made, or the
/// claims cannot be read, the process says so and goes on: the check
/// protects against a mistake, it is not a lock. What a claim's name holds
/// is printed escaped.
fn claim_address<P>(config: &Config, addr: SocketAddr) -> io::Result<Option<Claim>> {
    let pid = process::id();
    let service = match &config.service {
        Some(name) => claim::clean(name.as_ref()),
        None => claim::service_of::<P>(),
    };
    // Announcing first: of two processes that start at once, the one
    // that lists second sees the other. A process that cannot announce
    // still checks the others.
    let claimed = claim::announce(addr, &service)
        .inspect_err(|e| {
            say!(
                "Process {pid} cannot announce its service on {addr} ({e}); siblings cannot check it"
            );
        })
        .ok();
    let listing = match claim::list() {
        Ok(listing) => listing,
        Err(e) => {
            say!("Process {pid} cannot list the services on {addr} ({e}); not checked");
            return Ok(claimed);
        }
    };
    if let Some(why) = &listing.owners_unknown {
        say!(
            "Process {pid} cannot tell who announced the services on {addr} ({why}); \
             another service there is reported, not refused"
        );
    }
    match listing.conflict(addr, &service) {
        None => {}
        Some(Conflict::Mine(other)) if !config.join_any => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{addr} is served by another service, {} (pid {}), and this is {service}; \
                     refusing to split its clients between two programs (--join-any to share it)",
                    Escaped(&other.service),
                    other.pid
                ),
            ));
        }
        Some(Conflict::Mine(other)) => say!(
            "Process {pid} joins {addr}, which {} (pid {}) also serves",
            Escaped(&other.service),
            other.pid
        ),
        Some(Conflict::Unknown(other)) => say!(
            "Process {pid} joins {addr}, which {} (pid {}) may also serve: who announced it is unknown",
            Escaped(&other.service),
            other.pid
        ),
    }
    Ok(claimed)
}

/// The stamp the connection in `key` carries in [`Classes`], or 0.
fn filed_stamp<C>(conns: &Slab<Conn<TcpStream, C>>, key: usize) -> u32 {
    conns.get(key).and_then(Conn::share).map_or(0, Share::stamp)
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        SIGHUP => "hangup",
        SIGTERM => "terminate",
        SIGINT => "interrupt",
        _ => "unexpected",
    }
}
