//! The kernel's corner cases around a `SO_REUSEPORT` group: connections
//! migrated from a closing sibling, a group whose members change during a
//! drain, and a drain that starts while accept is paused for descriptors.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use libc::SIGHUP;

use crate::netns::{MIGRATE_REQ, in_namespace};
use crate::util::{
    Client, DEADLINE, Server, have_tool, raise_fd_limit, starved_server, status_field, wait_until,
};

/// A bare listener made with libc, joined to the group on `addr` with the
/// CPU tag `cpu` as drainport's own listeners carry them, that never
/// accepts: connections the kernel hands to it wait in its queue.
struct RawListener {
    fd: OwnedFd,
}

/// `SO_INCOMING_CPU` from `<asm-generic/socket.h>`.
const SO_INCOMING_CPU: libc::c_int = 49;

impl RawListener {
    /// One tagged listener per online CPU: a sibling the kernel treats like
    /// a drainport process.
    fn join_all(addr: SocketAddr) -> Vec<RawListener> {
        (0..testbed::system::cpus() as libc::c_int)
            .map(|cpu| RawListener::join(addr, cpu))
            .collect()
    }

    fn join(addr: SocketAddr, cpu: libc::c_int) -> RawListener {
        let SocketAddr::V4(addr) = addr else {
            panic!("IPv4 only: {addr}")
        };
        // SAFETY: plain socket calls on a descriptor this function owns, with
        // correctly sized arguments.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            for (option, value) in [
                (libc::SO_REUSEADDR, 1),
                (libc::SO_REUSEPORT, 1),
                (SO_INCOMING_CPU, cpu),
            ] {
                let rc = libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&raw const value).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                );
                assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
            }
            let sin = sockaddr_in(addr);
            let rc = libc::bind(
                fd.as_raw_fd(),
                (&raw const sin).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "bind {addr}: {}", io::Error::last_os_error());
            let rc = libc::listen(fd.as_raw_fd(), 512);
            assert_eq!(rc, 0, "listen: {}", io::Error::last_os_error());
            RawListener { fd }
        }
    }

    /// Connections waiting in the accept queue: for a listener, Linux
    /// reports the queue's length in `tcpi_unacked`.
    fn queued(&self) -> u32 {
        // SAFETY: TCP_INFO fills at most `len` bytes of a zeroed tcp_info.
        unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &mut len,
            );
            assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
            info.tcpi_unacked
        }
    }
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// With `tcp_migrate_req=1`, closing a listener hands its accept queue to a
/// sibling. Connections that reach drainport that way were never announced
/// by a SYN to it; each must still be accepted and answered.
#[test]
fn connections_migrated_from_a_closing_sibling_are_served() {
    in_namespace(&[MIGRATE_REQ], || {
        let mut server = Server::start(&["-q", "127.0.0.1:0"]);
        let raw = RawListener::join_all(server.addr);
        // For each CPU the kernel hashes each connection to one of the two
        // sockets tagged with it: with 200 clients, both sides get some.
        let mut clients: Vec<(String, Client)> = (0..200)
            .map(|i| {
                let mut client = Client::connect(server.addr);
                let line = format!("migrate {i}");
                client.send(format!("{line}\n").as_bytes());
                (line, client)
            })
            .collect();
        // Wait until drainport has answered everyone it could and the rest
        // are in the raw listeners' queues: a client's connect returns before
        // the listener's side has queued the connection.
        let queued = wait_until("each client answered or queued on a raw listener", || {
            let queued: u32 = raw.iter().map(RawListener::queued).sum();
            let status = server.wait_status("lines=");
            (status_field(&status, "lines") + u64::from(queued) == 200).then_some(queued)
        });
        assert!(queued > 0, "no connection landed on the raw listener");
        // Closing it migrates its queue to drainport.
        drop(raw);
        for (line, client) in &mut clients {
            client.expect_reply(format!("{line}\n").as_bytes(), server.pid);
        }
        server.wait_status("accepted=200 ");
        assert!(server.is_running());
        drop(clients);
        server.signal(SIGHUP);
        server.expect_clean_exit();
    });
}

/// New clients connect and are answered, over and over, from background
/// threads, until told to stop. A client whose SYN meets a retiring
/// listener waits a second for its retransmission, so two threads keep the
/// traffic moving. Any failure to connect or to be answered fails the
/// test. Each answer's pid is pushed to `served`, in order.
struct Traffic {
    stop: Arc<AtomicBool>,
    served: Arc<Mutex<Vec<u32>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(addr: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..2)
            .map(|t| {
                let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
                thread::spawn(move || {
                    let start = Instant::now();
                    for i in 0..5000 {
                        if stop.load(Ordering::SeqCst) || start.elapsed() > DEADLINE {
                            break;
                        }
                        let mut client = Client::try_connect(addr).unwrap_or_else(|e| {
                            panic!("new client {t}/{i} could not connect: {e}")
                        });
                        let pid = client
                            .try_echo(&format!("traffic {t} {i}"))
                            .unwrap_or_else(|e| panic!("new client {t}/{i} was not answered: {e}"));
                        served.lock().unwrap().push(pid);
                        drop(client);
                        thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            served,
            threads,
        }
    }

    fn served(&self) -> Vec<u32> {
        self.served.lock().unwrap().clone()
    }

    /// Waits until a new client has been answered by `pid`.
    #[track_caller]
    fn wait_served_by(&self, pid: u32) {
        wait_until(&format!("a new client answered by {pid}"), || {
            assert!(
                self.threads.iter().all(|t| !t.is_finished()),
                "a traffic thread stopped early"
            );
            self.served().contains(&pid).then_some(())
        });
    }

    fn stop(self) -> Vec<u32> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().expect("a new client was lost");
        }
        Arc::try_unwrap(self.served)
            .expect("threads joined")
            .into_inner()
            .unwrap()
    }
}

/// Siblings start and stop while one process drains: the drainer keeps its
/// clients, new clients always find a live process, and the drainer exits
/// 0 once its own clients leave.
#[test]
fn siblings_come_and_go_during_a_drain() {
    raise_fd_limit();
    let mut drainer = Server::start(&["-q", "127.0.0.1:0"]);
    let mut first = drainer.sibling(&["-q"]);
    // Clients that the kernel hashed to the drainer; others are let go.
    let mut mine = Vec::new();
    for i in 0..400 {
        if mine.len() == 3 {
            break;
        }
        let mut client = Client::connect(drainer.addr);
        if client.echo(&format!("pick {i}")) == drainer.pid {
            mine.push(client);
        }
    }
    assert_eq!(mine.len(), 3, "SO_REUSEPORT never picked the drainer");
    drainer.signal(SIGHUP);
    drainer.expect_line(&format!("process {} closing tasks: 3", drainer.pid));
    // A status line comes after the drain has started, so by then the
    // drainer refuses new handshakes.
    drainer.wait_status("state=draining ");

    let traffic = Traffic::start(drainer.addr);
    traffic.wait_served_by(first.pid);
    // The group changes under the drainer: one sibling joins, the first
    // leaves, another joins, the second leaves. Each is seen serving before
    // it leaves, so the traffic crosses every change.
    let mut second = drainer.sibling(&["-q"]);
    traffic.wait_served_by(second.pid);
    first.signal(SIGHUP);
    first.expect_clean_exit();
    for client in &mut mine {
        assert_eq!(client.echo("after the first left"), drainer.pid);
    }
    let mut third = drainer.sibling(&["-q"]);
    traffic.wait_served_by(third.pid);
    second.signal(SIGHUP);
    second.expect_clean_exit();
    let after_second = traffic.served().len();
    wait_until("new clients after the second left", || {
        (traffic.served().len() >= after_second + 4).then_some(())
    });
    for client in &mut mine {
        assert_eq!(client.echo("after the second left"), drainer.pid);
    }
    assert!(drainer.is_running(), "the drainer left its clients");

    let served = traffic.stop();
    assert!(
        !served.contains(&drainer.pid),
        "the draining process admitted a new client"
    );
    assert!(
        served[after_second..].iter().all(|&pid| pid == third.pid),
        "a new client went to a process that had left: {:?}",
        &served[after_second..]
    );

    drop(mine);
    drainer.expect_clean_exit();
    third.signal(SIGHUP);
    third.expect_clean_exit();
}

/// The drain starts while accept is paused for lack of descriptors and
/// clients still wait in the queue. The listener must not close on them:
/// once descriptors free up they are accepted and answered, not reset, and
/// the process exits 0 when all have left.
#[test]
fn a_drain_that_starts_out_of_descriptors_serves_the_queue() {
    if !have_tool("prlimit", "util-linux") {
        return;
    }
    // 64 descriptors: a handful for the server itself, the rest for clients.
    const CLIENTS: usize = 100;
    let (mut server, mut clients, accepted) = starved_server(64, CLIENTS, "queued");

    server.signal(SIGHUP);
    server.expect_line(&format!("process {} closing tasks: {accepted}", server.pid));
    // The accepted clients are served, then leave, freeing descriptors.
    let waiting = clients.split_off(accepted);
    for (i, client) in clients.iter_mut().enumerate() {
        client.expect_reply(format!("queued {i}\n").as_bytes(), server.pid);
    }
    drop(clients);
    // Those that waited in the queue through the start of the drain are
    // accepted now, and answered.
    let mut waiting = waiting;
    for (i, client) in waiting.iter_mut().enumerate() {
        client.expect_reply(format!("queued {}\n", accepted + i).as_bytes(), server.pid);
    }
    assert!(server.is_running(), "exited with clients left");
    drop(waiting);
    let lines = server.expect_clean_exit().join("\n");
    assert_eq!(
        lines.matches("accepted connection from").count(),
        CLIENTS,
        "{lines}"
    );
}
