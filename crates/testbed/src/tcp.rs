//! What the benchmarks and the steering checks need from a client
//! socket: pinning the thread that connects, so its SYNs are handled on a
//! chosen CPU; reading how often a connection's SYN was sent; and one
//! round trip of drainport's echo; one wait of a client-side mio poll.
//! Used by the benchmarks that pin their clients and by the integration
//! tests.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::{Events, Poll};

/// One `epoll_wait` of at most `timeout`; an interrupted wait counts as an
/// empty one.
pub fn poll_for(poll: &mut Poll, events: &mut Events, timeout: Duration) -> Result<(), String> {
    match poll.poll(events, Some(timeout)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            events.clear();
            Ok(())
        }
        Err(e) => Err(format!("poll: {e}")),
    }
}

/// Pins the calling thread to `cpu`, so that its SYNs are handled there.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity
    // get a valid set of the size passed.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How many times this connection's segments were sent again. Read right
/// after the connect, it counts resent SYNs: 0 unless a SYN was dropped and
/// the client waited for its retransmission.
pub fn syn_retransmits(stream: &TcpStream) -> io::Result<u32> {
    // SAFETY: TCP_INFO fills at most `len` bytes of a zeroed tcp_info.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        );
        if rc == 0 {
            Ok(info.tcpi_total_retrans)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Sends `line` (with its newline) and reads drainport's answer: the line
/// echoed, then its `: from <pid>` line. An error if the connection ends
/// first or the answer does not start with `line`.
pub fn echo(stream: &mut TcpStream, line: &[u8]) -> io::Result<()> {
    stream.write_all(line)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.iter().filter(|&&b| b == b'\n').count() < 2 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    if !got.starts_with(line) {
        return Err(io::Error::other(format!(
            "answered {:?}",
            String::from_utf8_lossy(&got)
        )));
    }
    Ok(())
}
