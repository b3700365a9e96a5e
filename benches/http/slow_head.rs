//! A request head sent a byte at a time, as a slow or hostile client sends
//! it: what it costs the server in CPU until the response goes out. The
//! example scans each byte of a head once, so the cost grows with the
//! head's length, not with its square.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::servers::{self, Pinning, Server};
use testbed::system::{self, CpuTimes, Res};

/// The head's length: under the example's 64 KiB input cap, which a head
/// must fit in.
pub const HEAD_BYTES: usize = 60_000;
/// The pause between two bytes, spun rather than slept so that the pace
/// holds at this scale: about a second and a half for the whole head.
pub const PACE: Duration = Duration::from_micros(25);
/// How long the response may take once the head is whole.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

pub struct SlowHead {
    pub bytes: usize,
    /// Server CPU (user and system, from its schedstat) from the first
    /// byte to the response.
    pub cpu_ms: f64,
    /// The user-space share of it, from the clock ticks of /proc's stat:
    /// what the example's own code costs, beside the kernel's reads.
    pub user_ms: f64,
    /// Wall time from the first byte to the response.
    pub wall_s: f64,
}

/// Sends one head of [`HEAD_BYTES`] a byte per `write`, [`PACE`] apart, to
/// a fresh `example` on `server_cpu`, from this thread on `client_cpu`.
pub fn run(
    example: &Path,
    pin: &Pinning,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
) -> Res<SlowHead> {
    if let Some(cpu) = client_cpu {
        system::pin_self(cpu)?;
    }
    let server = Server::drainport(example, servers::free_port()?, server_cpu, pin)?;
    let filler = HEAD_BYTES - "GET / HTTP/1.1\r\nHost: x\r\nX-Long: \r\n\r\n".len();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
        "a".repeat(filler)
    );
    let mut s = TcpStream::connect(server.addr()).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let before = CpuTimes::read(server.proc.pid)?;
    let started = Instant::now();
    for byte in head.as_bytes() {
        s.write_all(std::slice::from_ref(byte))
            .map_err(|e| format!("write: {e}"))?;
        let next = Instant::now() + PACE;
        while Instant::now() < next {
            std::hint::spin_loop();
        }
    }
    s.set_read_timeout(Some(ANSWER_DEADLINE))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"\n") || !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => return Err("the server closed before answering the slow head".into()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no answer to the slow head: {e}")),
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    let after = CpuTimes::read(server.proc.pid)?;
    if !answer.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!(
            "the slow head got {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        ));
    }
    server.stop()?;
    Ok(SlowHead {
        bytes: head.len(),
        cpu_ms: after.sched_ns.saturating_sub(before.sched_ns) as f64 / 1e6,
        user_ms: after.utime.saturating_sub(before.utime) as f64 * 1e3 / system::clk_tck() as f64,
        wall_s,
    })
}
