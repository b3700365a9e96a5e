//! The event loop: one `Poll` over the listeners, the signal pipe and every
//! client. The server owns the poll, the signals, admission and the drain,
//! and hands every client's turn to [`Clients`]: which clients come in,
//! and when the listeners close, is [`crate::admission`]'s to decide; when
//! the drain starts and ends, [`crate::drain`]'s; what a client's turn
//! does, [`crate::clients`]'s.
//!
//! Guarantees:
//! - A draining process admits no new client, serves every client it has,
//!   and exits with `Ok` once the last one leaves and its listeners are
//!   retired (at the end of the handshake window if it has no client).
//! - While a sibling runs, a draining process receives no new SYN, and no
//!   connection that reached it is reset when its listeners close (see
//!   [`crate::listener`] and [`crate::admission`] for how).
//! - The check "done, time to exit" lives in [`Server::finished`] only
//!   (which asks [`Drain::finished`]).
//! - Every timer comes from one list, [`Server::timers`], so the poll
//!   sleeps until the nearest one and never past it. It is built once per
//!   wakeup, after the batch, and again only if a timer fired. The
//!   per-connection deadlines are one entry there, [`Timer::Deadlines`],
//!   kept by [`crate::timeouts`].
//! - The clock is read once per wakeup, after the poll returns; that `now`
//!   dates every turn of the batch and decides every timer.

use std::io;
use std::net::SocketAddr;
use std::process;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

use crate::activation;
use crate::admission::{Accept, Admission};
use crate::backlog;
use crate::budget::Size;
use crate::claim::{self, Claim, Conflict};
use crate::clients::{Clients, Hook};
use crate::closes::Reason;
use crate::config::Config;
use crate::conn::Ready;
use crate::control::{self, Control, Holder};
use crate::drain::{Cause, Drain, Step};
use crate::listener::{Listeners, Origin};
use crate::log::{Escaped, plural, say};
use crate::notify::Notifier;
use crate::peer::Address;
use crate::pidfile::PidFile;
use crate::protection;
use crate::protocol::Protocol;
use crate::setting::{Setting, SettingError};
use crate::stats::Stats;
use crate::sys;
use crate::sys::stream::StreamSocket;
use crate::takeover;

/// The signal pipe's token.
const SIGNALS: Token = Token(usize::MAX - 1);
/// Listener `i` (of every address, one per online CPU each, or as passed)
/// has token `LISTENERS + i`. Client tokens are slab keys, far below.
const LISTENERS: usize = usize::MAX / 2;
// The control channel's tokens lie between the clients' and the listeners'.
const _: () = assert!(control::END_TOKEN <= LISTENERS);
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
/// server could not start or the poll itself failed. The error reads as
/// one line through `Display` (`eprintln!("{e}")`), which names what
/// failed and, where a setting is at fault or would fix it, the `Config`
/// field (`Config::join_any`); such an error carries a [`SettingError`]
/// saying which setting, for a program with flags of its own to name its
/// flag instead. A failure after the listeners started listening comes
/// only after the clients that reached them were served, so that a broken
/// start resets no connection.
///
/// It runs the process, not just a socket, until it returns:
/// - it takes over `SIGHUP`, `SIGTERM`, `SIGINT` and `SIGUSR1` for the
///   whole process (through signal-hook, first thing, and for good): the
///   first three start the drain and a second one stops it hard, `SIGUSR1`
///   prints a status line;
/// - it writes its log lines to stdout (see the README's "What it prints";
///   one per accepted client and one per client it closes unless
///   `config.quiet`, which is the default),
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
/// - it listens on those sockets for a successor of its own user and
///   service, and hands it its listening sockets on an address if asked,
///   once; with `Config::take_over` it is that successor, and takes the
///   listening sockets of the process named instead of opening its own;
/// - it answers `drainport stats` (and [`stats::ask`](crate::stats::ask))
///   on those sockets, for its own user, with its state and counts;
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
    sys::process::raise_fd_limit().map_err(|e| {
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
        .transpose()
        .map_err(|e| SettingError::wrap(Setting::PidFile, e))?;
    let service = service_name::<P>(config);
    let (listeners, claims, taking) = match config.take_over {
        Some(from) if passed.is_empty() => take_over(config, from, &service)?,
        _ => {
            if let Some(from) = config.take_over {
                say!(
                    "Process {pid} takes nothing over from process {from}: the sockets the service manager passed are shared already"
                );
            }
            let listeners = Listeners::open(&config.addrs, passed)
                .map_err(|e| SettingError::wrap(Setting::Addrs, e))?;
            say_origins(pid, &listeners, &config.addrs);
            let mut claims = Vec::new();
            for port in listeners.ports() {
                let addr = port.addr.clone();
                claims.push((claim_address(config, &addr, &service)?, addr));
            }
            (listeners, claims, Vec::new())
        }
    };
    protection::report(pid, listeners.ports());
    let addrs: Vec<Address> = listeners.ports().iter().map(|p| p.addr.clone()).collect();
    // The backlog is this process's to set only on the sockets it bound.
    let binds = listeners.ports().iter().any(|p| p.origin == Origin::Bound);
    let mut server = Server::new(config, protocol, listeners, signals, notifier, &service)?;
    for (claim, addr) in claims {
        if let Some(claim) = claim {
            server.control.add(claim, addr);
        }
    }
    // The listeners taken are in this process's epoll set, so accepting
    // starts with the first turn of the loop.
    if let Err(e) = confirm(pid, &mut server.admission, taking) {
        return match e {
            Unconfirmed::Before(e) => Err(e),
            Unconfirmed::After(e) => server.fail(e),
        };
    }
    if let Some(cap) = backlog::capped(config.backlog).filter(|_| binds) {
        say!(
            "Process {pid}: the listen backlog of {} is capped at {cap} by net.core.somaxconn; raise that sysctl for a longer queue",
            config.backlog
        );
    }
    let started = server.admission.listen(config.backlog).and_then(|()| {
        pid_file
            .map(|p| p.commit())
            .transpose()
            .map_err(|e| SettingError::wrap(Setting::PidFile, e))
    });
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

/// The listening sockets of process `from` on every configured address,
/// received and checked but not yet confirmed, with this process's claims.
/// Every address is checked (that process, this service) before this
/// process announces anything, and its sockets are asked for only after
/// its own claim is checked; until that process lets go of them, dropping
/// them here closes only this process's copies.
#[allow(clippy::type_complexity)]
fn take_over(
    config: &Config,
    from: u32,
    service: &str,
) -> io::Result<(
    Listeners,
    Vec<(Option<Claim>, Address)>,
    Vec<takeover::Pending>,
)> {
    let sources = config
        .addrs
        .iter()
        .map(|&addr| takeover::find(from, addr, service))
        .collect::<io::Result<Vec<_>>>()?;
    let mut claims = Vec::new();
    for &addr in &config.addrs {
        let addr = Address::from(addr);
        claims.push((claim_address(config, &addr, service)?, addr));
    }
    let mut taken = Vec::new();
    let mut pending = Vec::new();
    for source in sources {
        let addr = source.addr;
        let (socks, p) = takeover::receive(source, service)?;
        taken.push((addr, socks));
        pending.push(p);
    }
    Ok((Listeners::taken(taken), claims, pending))
}

/// Why a takeover was not confirmed: before any address was (this
/// process holds nothing alone, and may just exit), or after some were
/// (those are its own, and are retired as after a failed listen).
enum Unconfirmed {
    Before(io::Error),
    After(io::Error),
}

/// Asks the process each address is taken from to let go of it, in turn,
/// and makes each address confirmed this process's own. An address not
/// confirmed, and every one after it, stays with that process, which
/// serves on: this process closes its copies of them without touching
/// anything they share.
fn confirm(
    pid: u32,
    admission: &mut Admission,
    taking: Vec<takeover::Pending>,
) -> Result<(), Unconfirmed> {
    let mut confirmed = Vec::new();
    let mut taking = taking.into_iter();
    while let Some(pending) = taking.next() {
        let (from, addr) = (pending.from(), Address::from(pending.addr()));
        let count = admission.available(&addr).unwrap_or(0);
        if let Err(e) = pending.commit() {
            admission.hand_over(&addr);
            for rest in taking {
                admission.hand_over(&rest.addr().into());
            }
            return Err(if confirmed.is_empty() {
                Unconfirmed::Before(e)
            } else {
                Unconfirmed::After(e)
            });
        }
        say!(
            "Process {pid} took over {count} listener{} on {addr} from process {from}",
            if count == 1 { "" } else { "s" }
        );
        confirmed.push(addr);
    }
    for addr in confirmed {
        admission.make_own(&addr).map_err(|e| {
            Unconfirmed::After(io::Error::new(
                e.kind(),
                format!("cannot make the listeners on {addr} its own: {e}"),
            ))
        })?;
    }
    Ok(())
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

/// The loop's timers. Both the poll's timeout and the firing come from
/// [`Server::timers`], so no timer can wake the loop without being run, or
/// be due without waking it.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// Admission's own: a sweep, a look at handshakes in flight, the end
    /// of an accept pause, or clients waiting to be taken.
    Admission,
    /// The drain's: its timeout, or the next close of the hard stop.
    Drain,
    /// The next progress report.
    Progress,
    /// The nearest per-connection deadline: idle, send or the protocol's.
    Deadlines,
    /// The next line about clients closed for the buffer budget.
    Evictions,
    /// The control channel's: a connection's deadline, or accepting again.
    Control,
}

struct Server<P: Protocol> {
    pid: u32,
    quiet: bool,
    /// The drain notice, newline included.
    drain_notice: Option<Vec<u8>>,
    poll: Poll,
    signals: Signals,
    notifier: Notifier,
    /// Dropped, and so removed, when the server returns.
    pid_file: Option<PidFile>,
    /// The claim sockets, one per address, listening: what other
    /// processes of this user ask (a takeover).
    control: Control,
    admission: Admission,
    clients: Clients<StreamSocket, P>,
    drain: Drain,
    /// The client count last reported, and when the next report may go.
    reported: usize,
    report_at: Instant,
    /// The service it runs, for its stats.
    service: String,
    /// When it started serving, for its uptime.
    started: Instant,
}

impl<P: Protocol> Server<P> {
    fn new(
        config: &Config,
        protocol: P,
        listeners: Listeners,
        mut signals: Signals,
        notifier: Notifier,
        service: &str,
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
        let control = Control::new(service, poll.registry());
        Ok(Server {
            pid,
            quiet: config.quiet,
            drain_notice: config
                .drain_notice
                .as_ref()
                .map(|text| format!("{text}\n").into_bytes()),
            poll,
            signals,
            notifier,
            pid_file: None,
            control,
            admission,
            clients: Clients::new(config, protocol, now),
            drain: Drain::new(config.drain_timeout, config.close_spread),
            reported: 0,
            report_at: now,
            service: service.to_owned(),
            started: now,
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        // Read once per wakeup, before the batch: it dates the clients'
        // turns and decides the timers. Timers then fire, and the next sleep
        // ends, late by at most that batch's time, never early, so the loop
        // cannot spin on them.
        let mut now = Instant::now();
        // The nearest timer, from the table as the last wakeup left it.
        let mut next = nearest(&self.timers(now));
        while !self.finished() {
            let timeout = self.timeout(next, now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    now = Instant::now();
                    continue;
                }
                return Err(e);
            }
            // Turns are dated with the time the loop woke, not the time it
            // went to sleep: an idle deadline counts from the read.
            now = Instant::now();
            self.admission.new_turn();
            let mut listener_ready = false;
            let mut signals_ready = false;
            for event in &events {
                // Clients first, by one comparison: every reserved token
                // is above theirs.
                match event.token() {
                    // An event for a client closed earlier in this batch
                    // finds an empty slot: slots are reused only after it.
                    Token(key) if key < control::FIRST_TOKEN => {
                        self.clients.turn(key, Hook::Ready(Ready::from(event)), now);
                    }
                    SIGNALS => signals_ready = true,
                    Token(t) if t >= LISTENERS => {
                        self.admission.mark(t - LISTENERS);
                        listener_ready = true;
                    }
                    Token(t) => {
                        self.control.on_event(t, &mut self.admission, now);
                        self.answer_stats(now);
                    }
                }
            }
            if listener_ready {
                self.accept(now);
            }
            if signals_ready {
                self.on_signals(now);
            }
            self.clients.run_again(now);
            next = self.on_timers(now);
            self.clients.recycle();
        }
        if self.drain.is_closing() {
            say!("Process {} exiting", self.pid);
        } else {
            say!("Process {} has no clients left, exiting", self.pid);
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
        self.drain.begin(now);
        self.accept(now);
        self.run()?;
        Err(err)
    }

    /// The one place that decides the process is done: draining or closing,
    /// the listeners retired, and no client left.
    fn finished(&self) -> bool {
        self.drain
            .finished(self.admission.is_closed(), self.clients.len())
    }

    /// Admits what admission hands over, and returns why it stopped.
    fn accept(&mut self, now: Instant) -> Accept {
        loop {
            match self.admission.accept(self.clients.len(), now) {
                Accept::Client(stream, ip, listener) => self.admit(stream, ip, listener, now),
                stop => return stop,
            }
        }
    }

    fn admit(
        &mut self,
        mut stream: StreamSocket,
        ip: Option<SocketAddr>,
        listener: usize,
        now: Instant,
    ) {
        let peer = self.admission.peer(ip, listener);
        let key = self.clients.vacant_key();
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
        let admitted = self.clients.admit(stream, now);
        debug_assert_eq!(admitted, key, "registered under another key");
        if !self.quiet {
            say!("Process {} accepted connection from: {peer}", self.pid);
        }
        self.clients.turn(key, Hook::Connect(peer), now);
        if !self.drain.is_running() {
            // Taken from the queue after the drain began: it hears of the
            // drain as everyone else did.
            let notice = self.drain_notice.as_deref();
            self.clients.turn(key, Hook::Drain(notice), now);
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
            if signal == SIGUSR1 {
                self.print_status(now);
                continue;
            }
            match self.drain.on_stop_signal(now, self.clients.len()) {
                Step::StartDrain => self.start_drain(signal, now),
                Step::HardStop(cause) => {
                    let reason = format!("received {} signal during drain", signal_name(signal));
                    self.close_all(&reason, now, cause);
                }
                step => {
                    let left = self.clients.len();
                    say!(
                        "Process {} received {} signal while closing: closing {left} client{} now",
                        self.pid,
                        signal_name(signal),
                        plural(left)
                    );
                    self.act(step, now);
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
        say!("process {} closing tasks: {}", self.pid, self.clients.len());
        let clients = self.clients.len();
        self.reported = clients;
        self.report_at = now + PROGRESS_INTERVAL;
        self.notifier.send(format_args!(
            "STOPPING=1\nSTATUS=draining, {clients} client{} left",
            plural(clients)
        ));
        self.clients.drain(self.drain_notice.as_deref(), now);
        // What is queued already reached this process: serve it.
        self.accept(now);
    }

    /// Ends the drain: every client gets the protocol's closing line and is
    /// closed, all now, or evenly over the close spread after the drain
    /// timeout.
    fn close_all(&mut self, reason: &str, now: Instant, cause: Cause) {
        // Take what is still queued so those clients get the line too. If
        // accepting is paused, what is left queued is reset by the close:
        // a hard stop does not wait for descriptors.
        self.admission.stop_now(now);
        self.accept(now);
        self.admission.close();
        let total = self.clients.len();
        let (window, step) = self.drain.close_all(now, total, cause);
        if window.is_zero() {
            say!(
                "Process {} {reason}: closing {total} client{}",
                self.pid,
                plural(total)
            );
        } else {
            say!(
                "Process {} {reason}: closing {total} client{} over {}s",
                self.pid,
                plural(total),
                window.as_secs_f64()
            );
        }
        self.act(step, now);
    }

    /// Does what the drain said.
    fn act(&mut self, step: Step, now: Instant) {
        if let Step::Close(count) = step {
            let why = match self.drain.cause() {
                Some(Cause::Timeout(_)) => Reason::DrainTimeout,
                Some(Cause::Signal) | None => Reason::HardStop,
            };
            self.clients.stop(count, why, now);
        }
    }

    fn print_status(&self, now: Instant) {
        say!("Process {} status: {}", self.pid, self.stats(now).counts());
    }

    /// The process's state and counts at `now`.
    fn stats(&self, now: Instant) -> Stats {
        let c = self.clients.counters();
        let waits = self.admission.waits();
        Stats {
            pid: self.pid,
            service: self.service.clone(),
            version: env!("DRAINPORT_VERSION").to_owned(),
            state: self.drain.state(),
            uptime: now.saturating_duration_since(self.started),
            draining: self
                .drain
                .since()
                .map(|at| now.saturating_duration_since(at)),
            clients: self.clients.len() as u64,
            accepted: c.accepted,
            closed: c.closed,
            full: waits.full,
            out_of_fds: waits.out_of_fds,
            lines: c.lines,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            buffers: self.clients.buffers() as u64,
        }
    }

    /// Says how many clients were closed for the buffer budget since the
    /// last such line, at most once per interval.
    fn report_evictions(&mut self, now: Instant) {
        if let Some(closed) = self.clients.take_evictions(now) {
            say!(
                "Process {} is over its budget for client buffers ({}): closed {} client{} holding the most, {} in all",
                self.pid,
                Size(self.clients.buffer_limit()),
                closed.clients,
                plural(closed.clients),
                Size(closed.bytes)
            );
        }
    }

    /// Reports a changed client count at most once per interval: to stdout
    /// while draining, and to the service manager always.
    fn report_progress(&mut self, now: Instant) {
        let clients = self.clients.len();
        if !self.progress_wanted() || now < self.report_at {
            return;
        }
        self.reported = clients;
        self.report_at = now + PROGRESS_INTERVAL;
        if self.drain.is_running() {
            self.notifier.send(format_args!(
                "STATUS=serving, {clients} client{}",
                plural(clients)
            ));
        } else {
            // The same word as the status line's state: after the deadline
            // the clients left are being closed, not waited for.
            let phase = self.drain.word();
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
        self.clients.len() != self.reported
            && (!self.drain.is_running() || self.notifier.is_active())
    }

    /// Every timer with when it is next due. The one list both the poll's
    /// timeout and [`Server::on_timers`] are derived from.
    #[inline]
    fn timers(&self, now: Instant) -> [(Timer, Option<Instant>); 6] {
        [
            (
                Timer::Admission,
                self.admission.due(self.clients.len(), now),
            ),
            (Timer::Drain, self.drain.due(self.clients.len())),
            (
                Timer::Progress,
                self.progress_wanted().then_some(self.report_at),
            ),
            (Timer::Deadlines, self.clients.next_due()),
            (Timer::Evictions, self.clients.evictions_due(now)),
            (Timer::Control, self.control.due()),
        ]
    }

    /// Fires the timers due at `now`, and returns when the next one is.
    /// The table is built once on a wakeup that fires nothing, which is
    /// most of them: nothing between here and the next poll moves a timer.
    fn on_timers(&mut self, now: Instant) -> Option<Instant> {
        let timers = self.timers(now);
        if !timers.iter().any(|&(_, at)| at.is_some_and(|at| at <= now)) {
            return nearest(&timers);
        }
        for (timer, at) in timers {
            if at.is_some_and(|at| at <= now) {
                self.fire(timer, now);
            }
        }
        nearest(&self.timers(now))
    }

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Admission => {
                let clients = self.clients.len();
                self.admission
                    .on_timer(clients, now, self.clients.spare_buffer());
                self.accept(now);
            }
            Timer::Drain => match self.drain.on_timer(now, self.clients.len()) {
                Step::HardStop(cause) => {
                    let timeout = match cause {
                        Cause::Timeout(timeout) => timeout,
                        Cause::Signal => Duration::ZERO,
                    };
                    let reason = format!("reached its drain timeout of {}s", timeout.as_secs_f64());
                    self.close_all(&reason, now, cause);
                }
                step => self.act(step, now),
            },
            Timer::Progress => self.report_progress(now),
            Timer::Deadlines => {
                let short = self.admission.is_starved();
                self.clients.expire(now, short);
            }
            Timer::Evictions => self.report_evictions(now),
            Timer::Control => {
                self.control.on_timer(&mut self.admission, now);
                self.answer_stats(now);
            }
        }
    }

    /// Answers the control channel's stats requests, if any is waiting,
    /// with the process as it is at `now`.
    fn answer_stats(&mut self, now: Instant) {
        if self.control.wants_stats() {
            let snapshot = self.stats(now).line();
            self.control.answer_stats(&snapshot);
        }
    }

    /// How long the next poll may sleep: not at all when a client has work
    /// left, otherwise until `next`, the nearest timer.
    fn timeout(&self, next: Option<Instant>, now: Instant) -> Option<Duration> {
        if self.clients.has_again() {
            return Some(Duration::ZERO);
        }
        next.map(|at| at.saturating_duration_since(now))
    }
}

/// The nearest of the timers.
fn nearest(timers: &[(Timer, Option<Instant>)]) -> Option<Instant> {
    timers.iter().filter_map(|&(_, at)| at).min()
}

/// Announces the service this process runs on `addr`, and refuses to go on
/// when another service of this uid already serves it (unless
/// `config.join_any`). Comes after the bind and before the listen, so
/// refusing resets nothing. Where the announcement cannot be made, or the
/// claims cannot be read, the process says so and goes on: the check
/// protects against a mistake, it is not a lock. What a claim's name holds
/// is printed escaped.
fn claim_address(config: &Config, addr: &Address, service: &str) -> io::Result<Option<Claim>> {
    let pid = process::id();
    // Announcing first: of two processes that start at once, the one
    // that lists second sees the other. A process that cannot announce
    // still checks the others.
    let claimed = claim::announce(addr, service)
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
    match listing.conflict(addr, service) {
        None => {}
        Some(Conflict::Mine(other)) if !config.join_any => {
            let message = format!(
                "{addr} is served by another service, {} (pid {}), and this is {service}; \
                 refusing to split its clients between two programs",
                Escaped(&other.service),
                other.pid
            );
            return Err(SettingError::new(Setting::JoinAny, message)
                .fixed_by("to share it")
                .into_io(io::ErrorKind::AddrInUse));
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

/// The service this process runs, as its claims and its stats name it:
/// as configured, or its protocol's type.
fn service_name<P>(config: &Config) -> String {
    match &config.service {
        Some(name) => claim::clean(name.as_ref()),
        None => claim::service_of::<P>(),
    }
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        SIGHUP => "hangup",
        SIGTERM => "terminate",
        SIGINT => "interrupt",
        _ => "unexpected",
    }
}
