//! The startup probe: does this kernel's `SO_REUSEPORT` selection honour
//! `SO_INCOMING_CPU`? Asked of the kernel itself, in a fraction of a
//! millisecond, on a loopback port of the probe's own.
//!
//! [`LISTENERS`] sockets share an ephemeral port on 127.0.0.1; only the
//! first is tagged, with the CPU this thread runs on. [`CONNECTS`]
//! connections are then made from this thread, so the kernel handles every
//! SYN on that CPU. A kernel that steers gives each of them
//! to the tagged socket, whatever the hash; one that picks by hash alone
//! gives each to any of the sockets, the tagged one with a chance of one in
//! [`LISTENERS`]. So one connection on an untagged socket proves the kernel
//! does not steer, and all of them on the tagged one say it does, wrongly
//! with a chance of 4^-8 (1 in 65,536).
//!
//! The thread is not pinned to its CPU: the shipped unit's system call
//! filter leaves out `sched_setaffinity` (`SystemCallFilter=~@resources`),
//! and the probe lasts a fraction of a millisecond. It reads its CPU
//! before and after each connection instead: a thread that moved spoils
//! the attempt, which is made again, at most [`ATTEMPTS`] times. The probe
//! closes everything before it returns. A kernel where the loopback port cannot be used (no
//! `lo` in a network namespace, say) cannot be asked; that answer counts as
//! "does not steer", so the operator hears about it.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::SO_INCOMING_CPU;
use crate::sys::{set_int_opt, syscall};

/// Sockets in the probe's group, of which one is tagged.
const LISTENERS: usize = 4;
/// Connections made; each lands on the tagged socket by chance with a
/// probability of 1/[`LISTENERS`] when the kernel does not steer.
const CONNECTS: usize = 8;
/// Tries of a probe whose thread moved to another CPU.
const ATTEMPTS: usize = 5;
/// How long the probe waits for its connections to be queued. On loopback
/// they are queued within the `connect` call; this bounds a kernel that
/// defers the work to ksoftirqd. Checked every 100 µs.
const WAIT: Duration = Duration::from_millis(100);

/// What the probe found.
#[derive(Debug)]
pub(crate) enum Steering {
    /// Every connection went to the socket tagged with the CPU that handled it.
    Steers,
    /// The group picked by hash alone.
    Ignores,
    /// The kernel could not be asked.
    Unknown(io::Error),
}

impl Steering {
    pub(crate) fn steers(&self) -> bool {
        matches!(self, Steering::Steers)
    }
}

/// Asks the kernel whether it steers by CPU tag.
pub(crate) fn probe() -> Steering {
    match run() {
        Ok(true) => Steering::Steers,
        Ok(false) => Steering::Ignores,
        Err(e) => Steering::Unknown(e),
    }
}

/// The probe, made again while its thread moves during it.
fn run() -> io::Result<bool> {
    for _ in 0..ATTEMPTS {
        if let Some(answer) = attempt()? {
            return Ok(answer);
        }
    }
    Err(io::Error::other(format!(
        "its thread moved to another CPU during each of {ATTEMPTS} tries"
    )))
}

/// One probe; `None` when the thread was seen on another CPU than the
/// tagged one, which spoils it.
fn attempt() -> io::Result<Option<bool>> {
    // SAFETY: sched_getcpu has no memory effects.
    let here = || syscall!(sched_getcpu());
    let cpu = here()?;
    let tagged = listener(None, cpu)?;
    let port = local_port(&tagged)?;
    let mut group = vec![tagged];
    for _ in 1..LISTENERS {
        group.push(listener(Some(port), -1)?);
    }
    for sock in &group {
        syscall!(listen(sock.as_raw_fd(), CONNECTS as libc::c_int * 2))?;
    }
    let mut clients = Vec::with_capacity(CONNECTS);
    for _ in 0..CONNECTS {
        let before = here()?;
        clients.push(connect(port)?);
        // A move between the two reads may have put the SYN on another CPU.
        if before != cpu || here()? != cpu {
            return Ok(None);
        }
    }
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        let mut counts = [0u32; LISTENERS];
        for (sock, count) in group.iter().zip(&mut counts) {
            *count = queued(sock)?;
        }
        if counts[1..].iter().any(|&n| n > 0) {
            break false;
        }
        if counts[0] as usize >= CONNECTS {
            break true;
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} of {CONNECTS} loopback connections arrived within {WAIT:?}",
                    counts[0]
                ),
            ));
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    // The listeners go first: closing one resets the connections queued on
    // it, so the clients' own closes then send nothing.
    drop(group);
    drop(clients);
    Ok(Some(answer))
}

/// A non-blocking listener on 127.0.0.1 with `SO_REUSEPORT` and the CPU
/// tag `cpu` (-1: none), on `port` or, without one, a free port.
fn listener(port: Option<u16>, cpu: libc::c_int) -> io::Result<OwnedFd> {
    let fd = socket()?;
    set_int_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    if cpu >= 0 {
        set_int_opt(fd.as_raw_fd(), libc::SOL_SOCKET, SO_INCOMING_CPU, cpu)?;
    }
    let addr = loopback(port.unwrap_or(0));
    // SAFETY: `addr` is a live sockaddr_in of the length given.
    syscall!(bind(
        fd.as_raw_fd(),
        (&raw const addr).cast(),
        mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
    ))?;
    Ok(fd)
}

/// Starts a connection to 127.0.0.1:`port`; on loopback the handshake is
/// done by the time `connect` returns, whatever it says.
fn connect(port: u16) -> io::Result<OwnedFd> {
    let fd = socket()?;
    let addr = loopback(port);
    // SAFETY: as in `listener`.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
    }
    Ok(fd)
}

/// How many finished connections wait in a listener's accept queue
/// (`tcpi_unacked` of a listening socket is its `sk_ack_backlog`).
fn queued(fd: &OwnedFd) -> io::Result<u32> {
    // SAFETY: all-zero is a valid tcp_info.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are live, and `len` is `info`'s size.
    syscall!(getsockopt(
        fd.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        (&raw mut info).cast(),
        &mut len
    ))?;
    Ok(info.tcpi_unacked)
}

fn socket() -> io::Result<OwnedFd> {
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let fd = syscall!(socket(libc::AF_INET, ty, 0))?;
    // SAFETY: `socket` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    }
}

fn local_port(fd: &OwnedFd) -> io::Result<u16> {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut addr: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are live, and `len` is `addr`'s size.
    syscall!(getsockname(
        fd.as_raw_fd(),
        (&raw mut addr).cast(),
        &mut len
    ))?;
    Ok(u16::from_be(addr.sin_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe's answer on the kernel running the tests, and what it
    /// costs. Printed on the real stderr, so that a plain `cargo test`
    /// shows the figure; its target (well under a millisecond) is a
    /// figure to read, not to assert.
    #[test]
    fn the_probe_answers_quickly() {
        const RUNS: usize = 200;
        let mut took = Vec::with_capacity(RUNS);
        let mut steers = 0;
        for _ in 0..RUNS {
            let start = Instant::now();
            let answer = probe();
            took.push(start.elapsed());
            match answer {
                Steering::Steers => steers += 1,
                Steering::Ignores => {}
                Steering::Unknown(e) => panic!("the probe could not run: {e}"),
            }
        }
        // A kernel answers the same every time.
        assert!(
            steers == 0 || steers == RUNS,
            "{steers} of {RUNS} said it steers"
        );
        let release = super::super::kernel_version();
        if release.is_some_and(|v| v >= super::super::STEERING_KERNEL) {
            assert_eq!(steers, RUNS, "Linux {release:?} does not steer by CPU tag");
        }
        took.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        use std::io::Write;
        let _ = writeln!(
            io::stderr().lock(),
            "steering probe on {release:?}: {} ({RUNS} runs: min {:.0} µs, median {:.0} µs, p99 {:.0} µs, max {:.0} µs)",
            if steers > 0 {
                "steers"
            } else {
                "does not steer"
            },
            us(took[0]),
            us(took[RUNS / 2]),
            us(took[RUNS * 99 / 100]),
            us(took[RUNS - 1]),
        );
    }
}
