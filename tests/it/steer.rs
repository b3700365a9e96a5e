//! Steering, as the service runs in production: while a sibling runs, a
//! draining process receives no new SYN. None is admitted there, none is
//! dropped (so no client waits for a SYN retransmission), and none is reset,
//! whatever the privileges: the servers run as an unprivileged user, and
//! once more as root, where the SYN filter is attached too and must never
//! fire.
//!
//! A dropped SYN shows in the client's `tcpi_total_retrans` right after the
//! connect, so "no client waited" is checked without a clock.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use libc::SIGHUP;

use crate::netns::{MIGRATE_REQ, Namespace, in_namespace};
use crate::runner::{Runner, Who};
use crate::util::{Client, DEADLINE, ScratchDir, Server, skip, status_field, wait_until};
use testbed::delaybed::nosteer;
use testbed::tcp::{pin_to, syn_retransmits};

/// The online CPUs, numbered from 0.
fn cpus() -> Vec<usize> {
    (0..testbed::system::cpus()).collect()
}

/// Connects `per_cpu` clients from each online CPU, all before any is
/// used, and returns them with their SYN retransmission counts.
fn connect_from_every_cpu(addr: SocketAddr, per_cpu: usize) -> Vec<(Client, u32)> {
    let threads: Vec<_> = cpus()
        .into_iter()
        .map(|cpu| {
            thread::spawn(move || {
                pin_to(cpu).unwrap_or_else(|e| panic!("pin to CPU {cpu}: {e}"));
                (0..per_cpu)
                    .map(|_| {
                        let client = Client::connect(addr);
                        let retransmits = syn_retransmits(&client.stream).expect("TCP_INFO");
                        (client, retransmits)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("connect thread"))
        .collect()
}

/// A client that the kernel gave to `server`, found by trying at most 400.
#[track_caller]
fn client_of(server: &Server) -> Client {
    for i in 0..400 {
        let mut client = Client::connect(server.addr);
        if client.echo(&format!("pick {i}")) == server.pid {
            return client;
        }
    }
    panic!("SO_REUSEPORT never picked process {}", server.pid);
}

/// One process drains beside a running sibling, then 300 clients connect
/// at once from every CPU: all go to the sibling, none waited.
fn new_clients_go_to_the_sibling(who: Who) {
    let run = match Runner::new(who) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let mut drainer = run.start(&["-q", "127.0.0.1:0"]);
    let addr = drainer.addr.to_string();
    let mut sibling = run.start(&["-q", &addr]);
    let mut kept = client_of(&drainer);

    drainer.signal(SIGHUP);
    drainer.expect_line(&format!("process {} closing tasks: 1", drainer.pid));
    let admitted = status_field(&drainer.wait_status("state=draining "), "accepted");

    let clients = connect_from_every_cpu(drainer.addr, 150);
    let waited = clients.iter().filter(|(_, r)| *r > 0).count();
    let mut served_by_drainer = 0;
    for (i, (mut client, _)) in clients.into_iter().enumerate() {
        let pid = client.echo(&format!("new {i}"));
        assert!(
            pid == sibling.pid || pid == drainer.pid,
            "answered by a stranger: {pid}"
        );
        served_by_drainer += usize::from(pid == drainer.pid);
    }
    assert_eq!(
        served_by_drainer, 0,
        "the draining process admitted new clients ({who:?})"
    );
    assert_eq!(
        waited, 0,
        "clients had their SYN dropped and waited for a retransmission ({who:?})"
    );
    assert_eq!(
        status_field(&drainer.wait_status("state=draining "), "accepted"),
        admitted,
        "the draining process accepted a connection"
    );

    // Its own client is still served, and its leaving ends the drain.
    assert_eq!(kept.echo("still here"), drainer.pid);
    drop(kept);
    drainer.expect_clean_exit();
    sibling.signal(SIGHUP);
    sibling.expect_clean_exit();
}

#[test]
fn new_clients_go_to_the_sibling_unprivileged() {
    new_clients_go_to_the_sibling(Who::Unprivileged);
}

/// A process at `--max-clients` leaves the selection: 100 new clients from
/// every CPU all go to its sibling, and none waits, not even for a SYN
/// resent. Once a slot frees, it takes clients again. When every process
/// is full, a new client waits in a backlog and is served when a slot
/// frees.
fn a_full_process_hands_new_clients_to_its_sibling(who: Who) {
    let run = match Runner::new(who) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let mut full = run.start(&["-q", "--max-clients", "8", "127.0.0.1:0"]);
    let addr = full.addr.to_string();
    let mut sibling = run.start(&["-q", &addr]);
    let mut held: Vec<Client> = (0..8).map(|_| client_of(&full)).collect();
    full.wait_status("state=running clients=8 ");

    let clients = connect_from_every_cpu(full.addr, 50);
    let waited = clients.iter().filter(|(_, r)| *r > 0).count();
    for (i, (mut client, _)) in clients.into_iter().enumerate() {
        let pid = client
            .try_echo(&format!("new {i}"))
            .unwrap_or_else(|e| panic!("client {i} was not served ({who:?}): {e}"));
        assert_eq!(
            pid, sibling.pid,
            "client {i} went to the full process ({who:?})"
        );
    }
    assert_eq!(waited, 0, "clients had their SYN resent ({who:?})");

    // A slot frees: the process rejoins the selection. It does so in the
    // timers of the loop turn that first counts 7 clients, after that
    // turn's status line; a second status line comes from a later turn, so
    // by then the selection has changed, however long the process waited
    // for a CPU in between.
    drop(held.pop());
    full.wait_status("clients=7 ");
    full.wait_status("clients=7 ");
    held.push(client_of(&full));

    // Both full: a new client waits in a backlog, then is served.
    let mut tight = run.start(&["-q", "--max-clients", "1", &addr]);
    sibling.signal(SIGHUP);
    sibling.expect_clean_exit();
    let tight_held = client_of(&tight);
    tight.wait_status("clients=1 ");
    let mut waiting = Client::connect(full.addr);
    waiting.send(b"queued\n");
    // Whichever backlog holds it, a free slot there serves it.
    drop(held.pop());
    drop(tight_held);
    let pid = waiting
        .try_read_reply(b"queued\n")
        .unwrap_or_else(|e| panic!("{who:?}: {e}"));
    assert!(
        pid == full.pid || pid == tight.pid,
        "served by {pid} ({who:?})"
    );
    // The hard stop of a full process ends.
    for mut server in [full, tight] {
        server.signal(SIGHUP);
        server.expect_line("closing tasks");
        server.signal(SIGHUP);
        server.expect_line("received hangup signal during drain");
        server.expect_clean_exit();
    }
}

#[test]
fn a_full_process_hands_new_clients_to_its_sibling_unprivileged() {
    a_full_process_hands_new_clients_to_its_sibling(Who::Unprivileged);
}

#[test]
fn a_full_process_hands_new_clients_to_its_sibling_as_root() {
    a_full_process_hands_new_clients_to_its_sibling(Who::Root);
}

/// The same, unprivileged, in a namespace where `tcp_migrate_req` is 1.
#[test]
fn a_full_process_hands_new_clients_to_its_sibling_with_tcp_migrate_req() {
    in_namespace(&[MIGRATE_REQ], || {
        a_full_process_hands_new_clients_to_its_sibling(Who::Unprivileged)
    });
}

#[test]
fn new_clients_go_to_the_sibling_as_root_with_the_filter() {
    new_clients_go_to_the_sibling(Who::Root);
}

/// Short-lived clients from every CPU, each checked: answered, never reset,
/// and never made to wait for a SYN retransmission. Each takes a ticket
/// before it connects, and `served` holds (ticket, pid) per answer.
pub struct Churn {
    stop: Arc<AtomicBool>,
    tickets: Arc<AtomicU64>,
    served: Arc<Mutex<Vec<(u64, u32)>>>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// At most this many connections per churn thread, whatever happens.
const CHURN_LIMIT: usize = 200_000;

impl Churn {
    pub fn start(addr: SocketAddr) -> Churn {
        Churn::start_with(move |cpu, i| churn_once(addr, cpu, i))
    }

    /// Churn whose every connection is `once(cpu, i)`: the pid that
    /// answered connection `i` from CPU `cpu`, or why it failed.
    pub fn start_with(
        once: impl Fn(usize, usize) -> Result<u32, String> + Send + Sync + 'static,
    ) -> Churn {
        let once = Arc::new(once);
        let stop = Arc::new(AtomicBool::new(false));
        let tickets = Arc::new(AtomicU64::new(0));
        let served = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = cpus()
            .into_iter()
            .map(|cpu| {
                let (stop, tickets, served, failures, once) = (
                    stop.clone(),
                    tickets.clone(),
                    served.clone(),
                    failures.clone(),
                    once.clone(),
                );
                thread::spawn(move || {
                    pin_to(cpu).unwrap_or_else(|e| panic!("pin to CPU {cpu}: {e}"));
                    let start = Instant::now();
                    for i in 0..CHURN_LIMIT {
                        if stop.load(Ordering::Relaxed) || start.elapsed() > DEADLINE {
                            break;
                        }
                        let ticket = tickets.fetch_add(1, Ordering::SeqCst);
                        match once(cpu, i) {
                            Ok(pid) => served.lock().unwrap().push((ticket, pid)),
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Churn {
            stop,
            tickets,
            served,
            failures,
            threads,
        }
    }

    /// The ticket the next connection will take: every connection with
    /// this ticket or a later one starts after this call.
    pub fn next_ticket(&self) -> u64 {
        self.tickets.load(Ordering::SeqCst)
    }

    /// The pids that answered connections with a ticket of `from` or later.
    pub fn served_since(&self, from: u64) -> Vec<u32> {
        let served = self.served.lock().unwrap();
        served
            .iter()
            .filter(|&&(ticket, _)| ticket >= from)
            .map(|&(_, pid)| pid)
            .collect()
    }

    /// Waits until `count` connections that start after this call are
    /// answered, and returns the ticket of the first, for
    /// [`Churn::served_since`]. `what` names the wait in a failure.
    #[track_caller]
    pub fn wait_answered(&self, count: usize, what: &str) -> u64 {
        let from = self.next_ticket();
        wait_until(what, || {
            (self.served_since(from).len() >= count).then_some(())
        });
        from
    }

    /// Waits until `pid` has answered a churn client.
    #[track_caller]
    pub fn wait_served_by(&self, pid: u32) {
        wait_until(&format!("a churn client served by {pid}"), || {
            self.served_since(0).contains(&pid).then_some(())
        });
    }

    /// Stops the churn and checks that no connection failed; `what` names
    /// the case in a failure. Returns the (ticket, pid) of every answer.
    #[track_caller]
    pub fn expect_no_failures(self, what: &str) -> Vec<(u64, u32)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("churn thread");
        }
        let served = self.served.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "{what}: {} of {} churn connections failed: {:?}",
            failures.len(),
            served.len() + failures.len(),
            &failures[..failures.len().min(10)]
        );
        served
    }
}

fn churn_once(addr: SocketAddr, cpu: usize, i: usize) -> Result<u32, String> {
    let stream = TcpStream::connect_timeout(&addr, DEADLINE)
        .map_err(|e| format!("connect from CPU {cpu}: {e}"))?;
    if syn_retransmits(&stream).map_err(|e| format!("TCP_INFO: {e}"))? > 0 {
        return Err(format!("CPU {cpu}: the SYN was dropped and sent again"));
    }
    let mut client = Client::from(stream);
    let line = format!("churn {cpu} {i}\n");
    client.send(line.as_bytes());
    client
        .try_read_reply(line.as_bytes())
        .map_err(|e| format!("reply: {e}"))
}

/// Rolling restarts under churn, as the service runs in production: two
/// unprivileged processes share the port, and six times a new one starts
/// and the oldest is sent SIGHUP. No connection fails, none is reset,
/// none waits for a SYN retransmission, and no process that has begun its
/// drain admits a new client.
#[test]
fn rolling_restarts_under_churn_reset_and_stall_nothing() {
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let first = run.start(&["-q", "127.0.0.1:0"]);
    let addr = first.addr.to_string();
    let mut live = vec![first, run.start(&["-q", &addr])];
    let churn = Churn::start(live[0].addr);
    for round in 0..6 {
        let newest = run.start(&["-q", &addr]);
        churn.wait_served_by(newest.pid);
        live.push(newest);
        let mut oldest = live.remove(0);
        oldest.signal(SIGHUP);
        oldest.expect_line(&format!("process {} closing tasks", oldest.pid));
        // Every connection that starts from here on finds a process that
        // is still running.
        let from = churn.wait_answered(50, &format!("churn to go on after round {round}"));
        oldest.expect_clean_exit();
        assert!(
            !churn.served_since(from).contains(&oldest.pid),
            "round {round}: process {} admitted a client after its drain began",
            oldest.pid
        );
    }
    churn.expect_no_failures("six rolling restarts");
    for mut server in live {
        server.signal(SIGHUP);
        server.expect_clean_exit();
    }
}

/// The protection line of a process started as `who`, with the kernel
/// made to ignore CPU tags when `shim` is the no-steering shim.
fn protection_line(run: &Runner, shim: Option<&std::path::Path>) -> String {
    let mut cmd = run.command(&[], &["-q", "127.0.0.1:0"]);
    if let Some(path) = shim {
        cmd.env(nosteer::PRELOAD, path);
    }
    let mut server = Server::spawn(cmd);
    server.signal(SIGHUP);
    server.expect_clean_exit();
    let lines: Vec<&String> = server
        .seen
        .iter()
        .filter(|l| l.contains("release protection"))
        .collect();
    assert_eq!(lines.len(), 1, "said once: {:#?}", server.seen);
    lines[0].clone()
}

/// Startup says what protects a release, found out from the kernel and
/// not from its version number: on this kernel, steering; on one that
/// ignores CPU tags (emulated with the shim that makes setting the tag a
/// no-op), the SYN filter for root, migration where `tcp_migrate_req` is
/// 1, and nothing for an unprivileged user, with the fixes easiest first.
/// Before the probe, the version was trusted, and a kernel that passed it
/// was taken to steer.
#[test]
fn startup_says_what_protects_a_release() {
    let dir = ScratchDir::new("protection");
    let shim = match nosteer::build(&dir) {
        Ok(path) => path,
        Err(reason) => return skip(&reason),
    };
    let unprivileged = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    if steering_kernel() {
        let line = protection_line(&unprivileged, None);
        assert!(line.contains("release protection: steering ("), "{line}");
    }
    let line = protection_line(&unprivileged, Some(&shim));
    assert!(
        line.contains("release protection: nothing: this kernel"),
        "{line}"
    );
    assert!(
        line.contains("does not steer new connections by CPU tag"),
        "{line}"
    );
    let at = |needle: &str| {
        line.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} in {line}"))
    };
    assert!(
        at("net.ipv4.tcp_migrate_req=1") < at("socket unit"),
        "{line}"
    );
    assert!(at("socket unit") < at("Linux 6.2 or later"), "{line}");
    assert!(
        at("Linux 6.2 or later") < at("CAP_NET_ADMIN, for the SYN filter"),
        "{line}"
    );

    match Runner::new(Who::Root) {
        Ok(root) => {
            let line = protection_line(&root, Some(&shim));
            assert!(
                line.contains("release protection: the SYN filter;"),
                "{line}"
            );
        }
        Err(reason) => skip(&format!("the root part: {reason}")),
    }
    match Namespace::create(&[MIGRATE_REQ]) {
        Ok(ns) => {
            let line = ns.run(move || {
                let run = Runner::new(Who::Unprivileged).expect("an unprivileged runner");
                protection_line(&run, Some(&shim))
            });
            assert!(
                line.contains("release protection: migration (net.ipv4.tcp_migrate_req=1"),
                "{line}"
            );
        }
        Err(reason) => skip(&format!("the migration part: {reason}")),
    }
}

/// Whether the kernel running the tests should steer by CPU tag (Linux
/// 6.2+). The server does not trust this; the test expects it of the
/// kernels it runs on.
fn steering_kernel() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 2)
}
