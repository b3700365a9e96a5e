//! Admission: which new clients this process takes, and when it stops
//! taking them for good.
//!
//! It owns the listeners and decides everything about them: accepting in
//! turns, pausing when descriptors run out, the client limit, the sweep,
//! whether the process is in the `SO_REUSEPORT` group's selection, and the
//! listeners' retirement at the drain. It knows no client: the loop asks
//! it for the next connection with [`Admission::accept`], which hands one
//! over or says why not ([`Accept`]), and asks it when it next wants to run
//! ([`Admission::due`]).
//!
//! Each address served (a port) retires on its own: a port of sockets this
//! process bound steers new SYNs away and keeps its listeners open for the
//! handshakes in flight on it (its own [`window`]); a port of shared
//! sockets lets go of them at once (see [`crate::listener`]).
//!
//! Guarantees:
//! - While the process can take clients, it is in every port's selection:
//!   its bound listeners carry their CPU tags, so the group sends it its
//!   share of new SYNs, and its shared ones are in the epoll set. While it
//!   cannot (at `max_clients`, out of descriptors, or retiring), it is in
//!   none, so new clients go to a sibling that can, if there is one.
//! - At most [`ACCEPTS_PER_TURN`] accepts per turn of the loop, taken from
//!   the listeners in turn, so no CPU's queue starves another's. The hard
//!   stop is the exception: [`Admission::stop_now`] takes up to
//!   [`HARD_STOP_ACCEPTS`] at once, for every queued client to get the
//!   closing line before the listeners close.
//! - A bound listener is closed only when its queue was seen empty after
//!   its port's handshake window ([`window`]) ended, and not while a
//!   successor is taking it over: no connection that reached it is reset
//!   by the close. One handed over to a successor is closed at once,
//!   without a window and with its tags left as they are: the successor
//!   holds the socket. A shared one is closed once this
//!   process took what was queued on it when it let go; closing a copy
//!   resets nothing while another holder keeps the socket.

mod window;

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::Registry;

use crate::control::Holder;
use crate::handshakes;
use crate::listener::Listeners;
use crate::log::{plural, say};
use crate::peer::{Address, Peer};
use crate::sockdiag;
use crate::sys::stream::StreamSocket;

use window::{Look, Window};

// The buffer the loop lends to a look holds any reply of the dump.
const _: () = assert!(crate::conn::READ_CHUNK >= sockdiag::DUMP_BUFFER);

/// Accepts per turn of the loop before clients get theirs.
pub(crate) const ACCEPTS_PER_TURN: usize = 256;
/// Accepts at a hard stop, which takes what is queued so that those
/// clients get the closing line too. Bounded: with no sibling to steer to,
/// new SYNs keep arriving.
const HARD_STOP_ACCEPTS: usize = 1 << 16;
/// How long accepting pauses after running out of descriptors or memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How often an open process tries `accept` without an event. A
/// connection migrated from a closing sibling may not raise one.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What [`Admission::accept`] did.
#[derive(Debug)]
pub(crate) enum Accept {
    /// A new client, to admit: its socket, its IP address if it has one,
    /// and the listener it came from ([`Admission::peer`]).
    Client(StreamSocket, Option<SocketAddr>, usize),
    /// Every queue was seen empty.
    Empty,
    /// Out of descriptors (or memory): accepting waits a moment; the
    /// clients stay queued.
    Paused,
    /// At `max_clients`: the rest wait in the backlog for a free slot.
    Full,
    /// This turn's accepts are used up; more may be queued.
    TurnOver,
    /// The listeners are closed.
    Closed,
}

enum Phase {
    /// Taking clients.
    Open {
        sweep_at: Instant,
    },
    /// Out of every port's selection; each port ends as [`Ending`] says.
    Retiring(Vec<Ending>),
    Closed,
}

/// How far one port's retirement has come.
#[derive(Debug)]
struct Ending {
    /// A bound port's handshake window; `None` for a shared port.
    window: Option<Window>,
    /// The window has ended (or there is none): the listeners close once
    /// their queues are empty.
    ended: bool,
    closed: bool,
}

/// The listeners and the policy over them.
pub(crate) struct Admission {
    pid: u32,
    listeners: Listeners,
    /// Keeps the epoll descriptor the listeners were added to open.
    #[allow(dead_code)]
    registry: Registry,
    max_clients: Option<usize>,
    phase: Phase,
    /// Accepting is paused until then, after running out of descriptors.
    paused_until: Option<Instant>,
    /// An out-of-descriptors episode has been reported, and the queues have
    /// not been emptied since.
    starved: bool,
    /// The listeners carry their CPU tags.
    selected: bool,
    /// Accepts left in this turn.
    budget: usize,
    /// The ports lent to a successor taking them over ([`crate::control`]),
    /// by index: a retirement must not close them meanwhile.
    lent: Vec<bool>,
    /// Stretches in which clients waited for this process.
    waits: Waits,
    /// The present stretch at `max_clients` is counted in `waits`.
    full_counted: bool,
}

/// How often clients had to wait for this process, which never refuses
/// one: a client it cannot take waits in its queue (or goes to a sibling
/// that can take it). Each is a count of stretches, from the first time a
/// client was seen waiting until the queues were next seen empty.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Waits {
    /// At `max_clients`, with a client in a queue of its own.
    pub(crate) full: u64,
    /// Out of descriptors (or memory), an accept failing.
    pub(crate) out_of_fds: u64,
}

impl Admission {
    /// Takes over the listeners, registering listener `i` under token
    /// `first_token + i`. Bound ones start listening with
    /// [`Admission::listen`]; passed ones listen already.
    pub(crate) fn new(
        pid: u32,
        mut listeners: Listeners,
        registry: &Registry,
        first_token: usize,
        max_clients: Option<usize>,
        now: Instant,
    ) -> io::Result<Admission> {
        use std::os::fd::AsRawFd;
        let registry = registry.try_clone()?;
        // The clone's epoll descriptor lives as long as the listeners do.
        listeners.register(registry.as_raw_fd(), first_token)?;
        let lent = vec![false; listeners.ports().len()];
        Ok(Admission {
            pid,
            listeners,
            registry,
            max_clients,
            phase: Phase::Open {
                sweep_at: now + SWEEP_INTERVAL,
            },
            paused_until: None,
            starved: false,
            selected: true,
            budget: ACCEPTS_PER_TURN,
            lent,
            waits: Waits::default(),
            full_counted: false,
        })
    }

    /// Starts listening. If this fails part-way, some listeners may hold
    /// clients: retire them with [`Admission::retire`], never by dropping.
    pub(crate) fn listen(&self, backlog: u32) -> io::Result<()> {
        self.listeners.listen(backlog)
    }

    /// Listener `i` reported a connection.
    pub(crate) fn mark(&mut self, i: usize) {
        self.listeners.mark(i);
    }

    /// A new turn of the loop: a fresh accept budget.
    pub(crate) fn new_turn(&mut self) {
        self.budget = ACCEPTS_PER_TURN;
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Who a client that listener `listener` gave is: its IP address, or
    /// the name of the Unix socket it connected to.
    pub(crate) fn peer(&self, ip: Option<SocketAddr>, listener: usize) -> Peer<'_> {
        match ip {
            Some(ip) => Peer::Ip(ip),
            None => self.listeners.address_of(listener).peer(),
        }
    }

    /// Out of descriptors: clients wait in the queues for one to free up,
    /// from the first failed accept until the queues are seen empty.
    pub(crate) fn is_starved(&self) -> bool {
        self.starved
    }

    /// Takes the next connection, or says why there is none to take now.
    /// `clients` is how many the process holds.
    pub(crate) fn accept(&mut self, clients: usize, now: Instant) -> Accept {
        if self.is_closed() {
            return Accept::Closed;
        }
        if self.paused_until.is_some_and(|until| now < until) {
            return Accept::Paused;
        }
        self.paused_until = None;
        if self.full(clients) {
            self.settle_selection(clients);
            self.count_full();
            return Accept::Full;
        }
        loop {
            let Some(i) = self.listeners.next_queued() else {
                return self.on_empty(clients);
            };
            if self.budget == 0 {
                return Accept::TurnOver;
            }
            self.budget -= 1;
            match self.listeners.accept(i) {
                Ok((stream, ip)) => return Accept::Client(stream, ip, i),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if retryable(&e) => {}
                Err(e) => {
                    self.pause(now, &e, clients);
                    return Accept::Paused;
                }
            }
        }
    }

    /// Every queue was seen empty: an out-of-descriptors episode is over,
    /// and a retirement whose window ended closes the listeners.
    fn on_empty(&mut self, clients: usize) -> Accept {
        self.full_counted = false;
        if self.starved {
            // The episode ends when everyone who waited has been taken,
            // not at the first free descriptor: freed descriptors trickle
            // in, and each would otherwise start a new episode with a new
            // log line.
            self.starved = false;
            say!("Process {} is accepting connections again", self.pid);
        }
        if let Phase::Retiring(ending) = &mut self.phase {
            for (port, end) in ending.iter_mut().enumerate() {
                // A lent port waits: the successor keeps it, or it comes
                // back (marked) and closes then.
                if end.ended && !end.closed && !self.lent[port] {
                    self.listeners.close(port);
                    end.closed = true;
                }
            }
            if ending.iter().all(|e| e.closed) {
                self.phase = Phase::Closed;
            }
        }
        if self.is_closed() {
            return Accept::Closed;
        }
        self.settle_selection(clients);
        Accept::Empty
    }

    /// Stops calling `accept` for a while. The connection that could not
    /// be taken stays queued in the kernel, so the client waits instead of
    /// being dropped, and the loop sleeps instead of spinning on it.
    fn pause(&mut self, now: Instant, err: &io::Error, clients: usize) {
        self.paused_until = Some(now + ACCEPT_PAUSE);
        if !self.starved {
            self.starved = true;
            self.waits.out_of_fds += 1;
            say!(
                "Process {} cannot accept ({err}); pausing accept, {clients} client{} connected",
                self.pid,
                plural(clients)
            );
        }
        self.settle_selection(clients);
    }

    /// At `max_clients`: counts the stretch once a client is seen waiting
    /// in a queue of this process's own. The kernel is asked only while
    /// the stretch is not counted yet and a listener is marked (a new
    /// connection's event, or the sweep's once a second), so a full
    /// process that nobody waits for makes no system call for it.
    fn count_full(&mut self) {
        if !self.full_counted && self.listeners.any_queued() && self.listeners.anyone_waiting() {
            self.full_counted = true;
            self.waits.full += 1;
        }
    }

    /// How often clients had to wait for this process so far.
    pub(crate) fn waits(&self) -> Waits {
        self.waits
    }

    /// At the client limit, which holds only while the process is open.
    fn full(&self, clients: usize) -> bool {
        matches!(self.phase, Phase::Open { .. }) && self.max_clients.is_some_and(|m| clients >= m)
    }

    /// Whether the group should send new SYNs here: while the process is
    /// open and can take them.
    fn wants_selection(&self, clients: usize) -> bool {
        matches!(self.phase, Phase::Open { .. }) && !self.starved && !self.full(clients)
    }

    /// Enters or leaves every port's selection, to match what the process
    /// can take. A failure is not retried: the selection then stays as it
    /// is, which costs a client some waiting but never a reset.
    fn settle_selection(&mut self, clients: usize) {
        let want = self.wants_selection(clients);
        if want != self.selected {
            self.selected = want;
            for port in 0..self.listeners.ports().len() {
                let _ = if want {
                    self.listeners.rejoin(port)
                } else {
                    self.listeners.leave(port)
                };
            }
        }
    }

    /// Starts the retirement of every port. A bound one steers new SYNs
    /// away, adds the SYN filter where permitted, and opens its handshake
    /// window; a shared one lets go of its sockets. What is queued is still
    /// to be accepted. Returns the first steering failure, if any.
    pub(crate) fn retire(&mut self, now: Instant) -> io::Result<()> {
        if !matches!(self.phase, Phase::Open { .. }) {
            return Ok(());
        }
        self.selected = false;
        let mut steered = Ok(());
        let mut ending = Vec::with_capacity(self.listeners.ports().len());
        for port in 0..self.listeners.ports().len() {
            if self.listeners.open_count(port) == 0 {
                // Handed over to a successor: nothing left to retire.
                ending.push(Ending {
                    window: None,
                    ended: true,
                    closed: true,
                });
                continue;
            }
            if self.listeners.ports()[port].shared {
                self.listeners.let_go(port);
                ending.push(Ending {
                    window: None,
                    ended: true,
                    closed: false,
                });
                continue;
            }
            if let Err(e) = self.listeners.leave(port) {
                steered = steered.and(Err(e));
            }
            // The safety net for SYNs steering could not place elsewhere,
            // where this process may attach it. Without it such a SYN is
            // admitted during the window, so its failure is no news:
            // startup already said what protects the drain.
            let _ = self.listeners.refuse_syns(port);
            ending.push(Ending {
                window: Some(Window::open(now)),
                ended: false,
                closed: false,
            });
        }
        self.phase = if ending.iter().all(|e| e.closed) {
            Phase::Closed
        } else {
            Phase::Retiring(ending)
        };
        self.listeners.mark_all();
        steered
    }

    /// A hard stop: no window; the next accepts take what is queued, then
    /// the listeners close.
    pub(crate) fn stop_now(&mut self, now: Instant) {
        let _ = self.retire(now);
        if let Phase::Retiring(ending) = &mut self.phase {
            for end in ending {
                end.ended = true;
            }
        }
        self.listeners.mark_all();
        self.budget = HARD_STOP_ACCEPTS;
    }

    /// Makes the listeners taken over on `addr` this process's own, once
    /// the process that handed them over has let go: see
    /// [`Listeners::make_own`].
    pub(crate) fn make_own(&mut self, addr: &Address) -> io::Result<()> {
        match self.listeners.port_of(addr) {
            Some(port) => self.listeners.make_own(port),
            None => Ok(()),
        }
    }

    /// Closes the listeners now, whatever they hold: the last step of a
    /// hard stop, when accepting is paused.
    pub(crate) fn close(&mut self) {
        if !self.is_closed() {
            for port in 0..self.listeners.ports().len() {
                self.listeners.close(port);
            }
            self.phase = Phase::Closed;
        }
    }

    /// When admission next wants the loop's attention: at once when
    /// queued clients can be taken or the selection must change, else at
    /// the next sweep, look or end of a pause.
    pub(crate) fn due(&self, clients: usize, now: Instant) -> Option<Instant> {
        let phase = match &self.phase {
            Phase::Closed => return None,
            Phase::Open { sweep_at } => Some(*sweep_at),
            Phase::Retiring(ending) => ending
                .iter()
                .filter(|e| !e.ended)
                .filter_map(|e| e.window.as_ref().map(Window::due))
                .min(),
        };
        if let Some(until) = self.paused_until {
            return phase.map_or(Some(until), |at| Some(at.min(until)));
        }
        let work = self.listeners.any_queued() && !self.full(clients);
        let reselect = self.wants_selection(clients) != self.selected;
        if work || reselect {
            return Some(now);
        }
        phase
    }

    /// Runs what is due: a sweep, a look at the handshakes in flight (read
    /// into `buf`, [`sockdiag::DUMP_BUFFER`] bytes: the loop lends its
    /// read buffer), a change of selection. The caller accepts afterwards.
    pub(crate) fn on_timer(&mut self, clients: usize, now: Instant, buf: &mut [u8]) {
        match &mut self.phase {
            Phase::Open { sweep_at } if now >= *sweep_at => {
                *sweep_at = now + SWEEP_INTERVAL;
                self.listeners.mark_all();
            }
            Phase::Retiring(ending) => {
                for (port, end) in ending.iter_mut().enumerate() {
                    let Some(window) = &mut end.window else {
                        continue;
                    };
                    if end.ended || now < window.due() {
                        continue;
                    }
                    // A window is a bound port's, and bound ports are IP.
                    let Some(addr) = self.listeners.ports()[port].addr.ip() else {
                        end.ended = true;
                        continue;
                    };
                    end.ended = look(self.pid, addr, window, now, buf);
                    if end.ended {
                        // Whatever completed during the window is queued.
                        self.listeners.mark_all();
                    }
                }
            }
            _ => {}
        }
        self.settle_selection(clients);
    }
}

/// The control channel lends a port's listeners to a successor, and hands
/// them over if it takes them.
impl Holder for Admission {
    fn available(&self, addr: &Address) -> Result<usize, String> {
        let Some(port) = self.listeners.port_of(addr) else {
            return Err(format!("it does not serve {addr}"));
        };
        if self.listeners.ports()[port].shared {
            return Err(format!(
                "its sockets on {addr} were passed by the service manager, which passes them to a successor too"
            ));
        }
        match self.listeners.open_count(port) {
            0 => Err(format!("its listeners on {addr} are closed")),
            n => Ok(n),
        }
    }

    fn listener(&self, addr: &Address, i: usize) -> Option<(RawFd, libc::c_int)> {
        self.listeners.handle(self.listeners.port_of(addr)?, i)
    }

    fn lend(&mut self, addr: &Address, lent: bool) {
        let Some(port) = self.listeners.port_of(addr) else {
            return;
        };
        self.lent[port] = lent;
        if !lent {
            // A retirement whose window ended meanwhile closes them now.
            self.listeners.mark_all();
        }
    }

    fn hand_over(&mut self, addr: &Address) {
        let Some(port) = self.listeners.port_of(addr) else {
            return;
        };
        self.lent[port] = false;
        // Out of the epoll set first, then closed: epoll follows the open
        // file description, which the successor still holds, so a closed
        // copy left in the set would go on reporting its connections here.
        // No tag is cleared: the sockets are the successor's now.
        self.listeners.close(port);
        let ports = self.listeners.ports().len();
        let all_closed = match &mut self.phase {
            Phase::Retiring(ending) => {
                ending[port].ended = true;
                ending[port].closed = true;
                ending.iter().all(|e| e.closed)
            }
            Phase::Open { .. } => (0..ports).all(|p| self.listeners.open_count(p) == 0),
            Phase::Closed => false,
        };
        if all_closed {
            self.phase = Phase::Closed;
        }
    }
}

/// One look of `addr`'s handshake window at the handshakes in flight on
/// it (read into `buf`, at least a page); true once the window has ended.
fn look(pid: u32, addr: SocketAddr, window: &mut Window, now: Instant, buf: &mut [u8]) -> bool {
    match window.look(now, || handshakes::in_flight(addr, buf)) {
        Look::Wait => false,
        Look::Done => true,
        Look::Expired(left) => {
            if let Some(left @ 1..) = left {
                say!(
                    "Process {pid} closes its listeners on {addr} with {left} handshake{} still in flight after {}s",
                    plural(left),
                    window::WINDOW_MAX.as_secs()
                );
            }
            true
        }
        Look::Blind(e) => {
            say!(
                "Process {pid} cannot see the handshakes in flight on {addr} ({e}); its listeners there stay open {}s",
                window::WINDOW_MAX.as_secs()
            );
            false
        }
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

// The tests' own raw call borrows a listener's descriptor.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests;
