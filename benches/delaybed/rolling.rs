//! One case of the experiment: rolling restarts of drainport under the
//! client load, over a bed with a given delay and loss.
//!
//! The steps are those of the Python bed's `release_under_delay.py`:
//!  1. a new bed; `net.ipv4.tcp_migrate_req` set in the server namespace;
//!  2. once, with no client: start a server, HUP it, time its exit;
//!  3. start 2 servers, wait for each to say `listening on`;
//!  4. start the load; once the long-lived clients are answered, warm up
//!     for 2 s plus 2 round trips;
//!  5. `restarts` times: start a new server, wait (bounded) for its
//!     `listening on` line, SIGHUP the oldest running one, pause;
//!  6. wait 2 round trips plus 1.5 s, stop the load (the connections in
//!     flight finish; the client closes the long-lived ones), SIGHUP the
//!     rest and wait (bounded) for every server to exit; SIGKILL any
//!     still running then.
//!
//! The Python pauses a random 0.5 to 1 s after each HUP; here the pause is
//! fixed, 0.75 s by default, the same on average.
//!
//! How the servers get their sockets is the case's [`Kind`]: each binds
//! its own; or the bench holds one listening socket for the whole case and
//! passes it to every server, as systemd does for a socket unit shared
//! through `Sockets=`; or each new server takes over the sockets of the
//! one it replaces (`--take-over`, as `scripts/rolling-restart` does), the
//! first two binding their own. Another way is one more variant there and
//! in [`Server::start`]'s [`Serve`]. Without `steering`, every server runs
//! with the no-steering shim, as on Linux 5.14 to 6.1. With `shrink`, step
//! 5 starts no new server: `restarts + 1` servers start in step 3, and one
//! leaves per step, down to one; with takeover, `shrink` is a release from
//! 3 processes to 2 and the next one back to 3, in turn: two new ones take
//! over two old ones, and the third old one leaves with no successor (or
//! the third new one binds its own).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use super::activate;
use super::bed::Bed;
use super::churn::{Load, LoadConfig, LoadReport};
use super::relay::{Link, RelayStats};
use super::servers::{Binary, Serve, Server};

/// The servers' port in the server namespace.
pub const PORT: u16 = 9000;
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// How the servers get their listening sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Each binds its own, one per CPU, tagged: run by hand or by
    /// `scripts/rolling-restart`.
    Bound,
    /// One socket the bench holds and passes to each (`LISTEN_FDS`).
    Shared,
    /// Each new one takes over the sockets of the one it replaces
    /// (`--take-over`).
    Takeover,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bound => "bound",
            Kind::Shared => "shared",
            Kind::Takeover => "takeover",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// One way; the round trip is twice this.
    pub delay: Duration,
    pub loss_percent: f64,
    pub migrate_req: u8,
    pub restarts: usize,
    /// New short connections per second.
    pub rate: f64,
    pub max_in_flight: usize,
    pub long_lived: usize,
    pub pause: Duration,
    pub seed: u64,
    pub kind: Kind,
    /// The kernel steers by CPU tag (as this one does); without, the
    /// servers run with the no-steering shim.
    pub steering: bool,
    /// Servers leave without a successor: the count goes down by one per
    /// step instead of staying at two.
    pub shrink: bool,
}

impl Case {
    /// The Python bed's defaults, at `delay`: 20 restarts, 200 connections
    /// a second (at most 200 in flight), 20 long-lived clients.
    pub fn new(delay: Duration) -> Case {
        Case {
            delay,
            loss_percent: 0.0,
            migrate_req: 0,
            restarts: 20,
            rate: 200.0,
            max_in_flight: 200,
            long_lived: 20,
            pause: Duration::from_millis(750),
            seed: 1,
            kind: Kind::Bound,
            steering: true,
            shrink: false,
        }
    }

    pub fn rtt(&self) -> Duration {
        self.delay * 2
    }
}

/// What one case measured.
#[derive(Debug)]
pub struct Outcome {
    pub load: LoadReport,
    pub relay: RelayStats,
    /// `tcp_migrate_req` as read back in the server namespace.
    pub migrate_req: String,
    pub servers_started: usize,
    /// SIGHUP to exit, for every server that was sent a HUP and exited.
    pub hup_to_exit: Vec<Duration>,
    /// SIGHUP to exit of a server with no client at all.
    pub idle_hup_to_exit: Option<Duration>,
    /// Servers that did not exit 0 by themselves: pid and how they ended.
    pub bad_exits: Vec<String>,
    pub long_ready: usize,
    pub wall: Duration,
    /// The machine during the case, from `/proc/stat`: percent of CPU time
    /// busy, and percent stolen by the hypervisor.
    pub busy_percent: f64,
    pub steal_percent: f64,
    /// What the first server said protects its release, from its startup
    /// line: `steering`, `shared sockets`, `nothing`, …; with takeover,
    /// what the successors said: `takeover`.
    pub protection: String,
}

impl Outcome {
    /// `p50 / max` of the HUP-to-exit times, ms.
    pub fn hup_to_exit_ms(&self) -> (f64, f64) {
        let mut v: Vec<f64> = self
            .hup_to_exit
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        (v[v.len() / 2], v[v.len() - 1])
    }

    /// A line of counts for an assertion message.
    pub fn summary(&self) -> String {
        let l = &self.load;
        format!(
            "attempted {}, ok {}, failed {} ({}), stalled {}; long-lived: {} of {} ready, cut {} {:?}, \
             {} connect errors {:?}, bad replies {}, unanswered {}; servers started {}, bad exits {:?}; \
             relay: {} packets forwarded, {} late > 2 ms (worst {:.1} ms), SCHED_FIFO {}, \
             server RSTs {} (bare {}); tcp_migrate_req {}; {:.1} s, machine {:.0} % busy, {:.1} % stolen",
            l.attempted,
            l.ok,
            l.failed_total(),
            l.failed_by_kind(),
            l.stalled,
            self.long_ready,
            l.long.requested,
            l.long.cut,
            l.long.cuts,
            l.long.connect_errors.len(),
            l.long.connect_errors,
            l.long.bad_replies,
            l.long.missing,
            self.servers_started,
            self.bad_exits,
            self.relay.forwarded(),
            self.relay.late(),
            self.relay.late_max().as_secs_f64() * 1e3,
            self.relay.realtime,
            self.relay.to_client.rst,
            self.relay.to_client.bare_rst,
            self.migrate_req,
            self.wall.as_secs_f64(),
            self.busy_percent,
            self.steal_percent,
        )
    }
}

/// A fresh bed for `case`, with its `tcp_migrate_req` set. An error here
/// means the machine cannot host the bed (no namespaces, no TUN device).
pub fn prepare(case: &Case) -> Result<Bed, String> {
    let bed = Bed::up(Link {
        delay: case.delay,
        loss_percent: case.loss_percent,
        seed: case.seed,
    })?;
    bed.server
        .set_sysctl("net.ipv4.tcp_migrate_req", &case.migrate_req.to_string())?;
    Ok(bed)
}

/// Runs one case on `bed`, from [`prepare`], and tears the bed down.
pub fn run(mut bed: Bed, bin: &Binary, case: &Case) -> Result<Outcome, String> {
    let started = Instant::now();
    let cpu_before = cpu_times();
    let migrate_req = bed.server.sysctl("net.ipv4.tcp_migrate_req")?;
    let addr = SocketAddr::from((bed.server_ip, PORT));
    // The holder's socket, open for the whole case, made in the server
    // namespace.
    let held = match case.kind {
        Kind::Shared => Some(
            bed.server
                .run(move || activate::listening_socket(addr))?
                .map_err(|e| format!("cannot open the shared socket on {addr}: {e}"))?,
        ),
        Kind::Bound | Kind::Takeover => None,
    };
    let serve = match &held {
        Some(socket) => Serve::Passed(socket.as_raw_fd()),
        None => Serve::Bind(addr),
    };
    // A new server, taking over the sockets of process `from` if given.
    let start_from = |servers: &mut Vec<Server>, from: Option<u32>| -> Result<usize, String> {
        let serve = match from {
            Some(from) => Serve::TakeOver { addr, from },
            None => serve,
        };
        let mut server = Server::start(&bed.server, bin, serve, case.steering)?;
        server.wait_listening(LISTEN_TIMEOUT)?;
        servers.push(server);
        Ok(servers.len() - 1)
    };
    let start = |servers: &mut Vec<Server>| start_from(servers, None);

    // A drain with nothing to serve.
    let mut idle = Vec::new();
    let i = start(&mut idle)?;
    idle[i].hup();
    idle[i].wait_exit(EXIT_TIMEOUT);
    let idle_hup_to_exit = idle[i].hup_to_exit();
    let protection = idle[i]
        .protection
        .clone()
        .unwrap_or_else(|| "unsaid".into());
    let mut bad_exits = Vec::new();
    if !idle[i].exited_cleanly() {
        bad_exits.push(format!("idle {}: {}", idle[i].pid, idle[i].describe_exit()));
    }
    drop(idle);

    let mut servers: Vec<Server> = Vec::new();
    let mut running: VecDeque<usize> = VecDeque::new();
    let initial = match (case.kind, case.shrink) {
        (Kind::Takeover, true) => 3,
        (_, true) => case.restarts + 1,
        (_, false) => 2,
    };
    for _ in 0..initial {
        running.push_back(start(&mut servers)?);
    }
    let rtt = case.rtt();
    let load = Load::start(
        &bed.client,
        LoadConfig {
            addr,
            rate: case.rate,
            max_in_flight: case.max_in_flight,
            long_lived: case.long_lived,
            long_period: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(10),
            stall: rtt + Duration::from_millis(800),
            rtt,
        },
    )?;
    let long_ready = load.long_ready;
    thread::sleep(Duration::from_secs(2) + rtt * 2);
    for _ in 0..case.restarts {
        match (case.kind, case.shrink) {
            (Kind::Takeover, false) => {
                let oldest = running.pop_front().expect("two are running");
                let from = servers[oldest].pid;
                running.push_back(start_from(&mut servers, Some(from))?);
                servers[oldest].hup();
            }
            (Kind::Takeover, true) => {
                // 3 to 2, or 2 to 3: the first two are taken over either way.
                let old: Vec<usize> = running.drain(..).collect();
                for &o in old.iter().take(2) {
                    let from = servers[o].pid;
                    running.push_back(start_from(&mut servers, Some(from))?);
                }
                if old.len() == 2 {
                    running.push_back(start(&mut servers)?);
                }
                for &o in &old {
                    servers[o].hup();
                }
            }
            (_, shrink) => {
                if !shrink {
                    running.push_back(start(&mut servers)?);
                }
                let oldest = running.pop_front().expect("two are running");
                servers[oldest].hup();
            }
        }
        thread::sleep(case.pause);
    }
    thread::sleep(rtt * 2 + Duration::from_millis(1500));
    let report = load.stop()?;

    for &i in &running {
        servers[i].hup();
    }
    let deadline = Instant::now() + EXIT_TIMEOUT;
    for server in &mut servers {
        server.wait_exit(deadline.saturating_duration_since(Instant::now()));
    }
    for server in &mut servers {
        if server.running() {
            bad_exits.push(format!(
                "{}: still running {EXIT_TIMEOUT:?} after the last HUP, killed",
                server.pid
            ));
            server.signal(libc::SIGKILL);
            server.wait_exit(Duration::from_secs(5));
        } else if !server.exited_cleanly() {
            bad_exits.push(format!("{}: {}", server.pid, server.describe_exit()));
        }
    }
    // What a successor says, where there are successors.
    let protection = servers
        .iter()
        .filter_map(|s| s.protection.clone())
        .find(|p| p == "takeover")
        .unwrap_or(protection);
    let hup_to_exit = servers.iter().filter_map(Server::hup_to_exit).collect();
    let relay = bed.stop_relay();
    let (busy_percent, steal_percent) = match (cpu_before, cpu_times()) {
        (Some(a), Some(b)) => {
            let total = (b.0 - a.0).max(1) as f64;
            (
                100.0 * (total - (b.1 - a.1) as f64) / total,
                100.0 * (b.2 - a.2) as f64 / total,
            )
        }
        _ => (f64::NAN, f64::NAN),
    };
    Ok(Outcome {
        load: report,
        relay,
        migrate_req,
        servers_started: servers.len(),
        hup_to_exit,
        idle_hup_to_exit,
        bad_exits,
        long_ready,
        wall: started.elapsed(),
        busy_percent,
        steal_percent,
        protection,
    })
}

/// All, idle (with iowait) and stolen CPU time so far, in ticks.
fn cpu_times() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        // user to steal; guest time is counted in user already.
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    Some((
        v.iter().sum(),
        v.get(3)? + v.get(4)?,
        *v.get(7).unwrap_or(&0),
    ))
}
