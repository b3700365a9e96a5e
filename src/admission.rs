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
//! Guarantees:
//! - While the process can take clients, its listeners carry their CPU
//!   tags, so the group sends it its share of new SYNs. While it cannot
//!   (at `max_clients`, out of descriptors, or retiring), they carry none,
//!   so the group sends new SYNs to a sibling that can, if there is one.
//! - At most [`ACCEPTS_PER_TURN`] accepts per turn of the loop, taken from
//!   the listeners in turn, so no CPU's queue starves another's. The hard
//!   stop is the exception: [`Admission::stop_now`] takes up to
//!   [`HARD_STOP_ACCEPTS`] at once, for every queued client to get the
//!   closing line before the listeners close.
//! - A listener is closed only when its queue was seen empty after the
//!   handshake window ([`window`]) ended: no connection that reached it
//!   is reset by the close.

mod window;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::Registry;
use mio::net::TcpStream;

use crate::handshakes;
use crate::listener::{Listeners, Protection};
use crate::log::{plural, say};
use crate::sockdiag;
use crate::steer;

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
    /// A new client, to admit.
    Client(TcpStream, SocketAddr),
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
    /// Steered away; the listeners stay open for handshakes in flight.
    /// `ended` once the window has: they close when their queues are empty.
    Retiring {
        window: Window,
        ended: bool,
    },
    Closed,
}

/// The listeners and the policy over them.
pub(crate) struct Admission {
    pid: u32,
    listeners: Listeners,
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
}

impl Admission {
    /// Takes over bound listeners, registering listener `i` under token
    /// `first_token + i`. They start listening with [`Admission::listen`].
    pub(crate) fn new(
        pid: u32,
        mut listeners: Listeners,
        registry: &Registry,
        first_token: usize,
        max_clients: Option<usize>,
        now: Instant,
    ) -> io::Result<Admission> {
        listeners.register(registry, first_token)?;
        Ok(Admission {
            pid,
            listeners,
            registry: registry.try_clone()?,
            max_clients,
            phase: Phase::Open {
                sweep_at: now + SWEEP_INTERVAL,
            },
            paused_until: None,
            starved: false,
            selected: true,
            budget: ACCEPTS_PER_TURN,
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
                Ok((stream, peer)) => return Accept::Client(stream, peer),
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
        if self.starved {
            // The episode ends when everyone who waited has been taken,
            // not at the first free descriptor: freed descriptors trickle
            // in, and each would otherwise start a new episode with a new
            // log line.
            self.starved = false;
            say!("Process {} is accepting connections again", self.pid);
        }
        if let Phase::Retiring { ended: true, .. } = self.phase {
            self.close();
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
            say!(
                "Process {} cannot accept ({err}); pausing accept, {clients} client{} connected",
                self.pid,
                plural(clients)
            );
        }
        self.settle_selection(clients);
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

    /// Puts the CPU tags on or takes them off, to match what the process
    /// can take. A failure is not retried: the tags then stay as they are,
    /// which costs a client some waiting but never a reset.
    fn settle_selection(&mut self, clients: usize) {
        let want = self.wants_selection(clients);
        if want != self.selected {
            self.selected = want;
            let _ = if want {
                self.listeners.steer_back()
            } else {
                self.listeners.steer_away()
            };
        }
    }

    /// Starts the retirement: steers new SYNs away, adds the SYN filter
    /// where permitted, and opens the handshake window. What is queued is
    /// still to be accepted. Returns the steering's failure, if any.
    pub(crate) fn retire(&mut self, now: Instant) -> io::Result<()> {
        if !matches!(self.phase, Phase::Open { .. }) {
            return Ok(());
        }
        self.phase = Phase::Retiring {
            window: Window::open(now),
            ended: false,
        };
        self.selected = false;
        let steered = self.listeners.steer_away();
        // The safety net for SYNs steering could not place elsewhere, where
        // this process may attach it. Without it such a SYN is admitted
        // during the window, so its failure is no news: startup already
        // said whether anything protects the drain.
        let _ = self.listeners.refuse_syns();
        self.listeners.mark_all();
        steered
    }

    /// A hard stop: no window; the next accepts take what is queued, then
    /// the listeners close.
    pub(crate) fn stop_now(&mut self, now: Instant) {
        let _ = self.retire(now);
        if let Phase::Retiring { ended, .. } = &mut self.phase {
            *ended = true;
        }
        self.listeners.mark_all();
        self.budget = HARD_STOP_ACCEPTS;
    }

    /// Closes the listeners now, whatever they hold: the last step of a
    /// hard stop, when accepting is paused.
    pub(crate) fn close(&mut self) {
        if !self.is_closed() {
            self.listeners.deregister(&self.registry);
            self.listeners.close();
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
            Phase::Retiring { window, ended } => (!ended).then(|| window.due()),
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
            Phase::Retiring {
                window,
                ended: ended @ false,
            } if now >= window.due() => {
                let addr = self.listeners.local_addr();
                match window.look(now, || handshakes::in_flight(addr, buf)) {
                    Look::Wait => {}
                    Look::Done => *ended = true,
                    Look::Expired(left) => {
                        *ended = true;
                        if let Some(left @ 1..) = left {
                            say!(
                                "Process {} closes its listeners with {left} handshake{} still in flight after {}s",
                                self.pid,
                                plural(left),
                                window::WINDOW_MAX.as_secs()
                            );
                        }
                    }
                    Look::Blind(e) => say!(
                        "Process {} cannot see the handshakes in flight ({e}); its listeners stay open {}s",
                        self.pid,
                        window::WINDOW_MAX.as_secs()
                    ),
                }
                if *ended {
                    // Whatever completed during the window is queued.
                    self.listeners.mark_all();
                }
            }
            _ => {}
        }
        self.settle_selection(clients);
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

/// Says once, at startup, when nothing keeps new clients away from a
/// draining process, with the consequence and the fix.
pub(crate) fn warn_unprotected(pid: u32) {
    let kernel = match steer::kernel_version() {
        Some((major, minor)) => format!("Linux {major}.{minor}"),
        None => "this kernel".to_owned(),
    };
    let (major, minor) = steer::STEERING_KERNEL;
    match Protection::probe() {
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
