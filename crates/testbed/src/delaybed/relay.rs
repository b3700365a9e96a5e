//! TUN devices and the relay between them: every IPv4 packet read from one
//! device is dropped with a fixed probability or held for the one-way delay
//! and written to the other device, one thread per direction.
//!
//! The delay is constant, so each direction is a FIFO: a packet is due at
//! its read time plus the delay, and the queue's head is always the next
//! one due. Each thread asks for SCHED_FIFO (priority 10) so other load on
//! the machine does not make packets late, and goes on at normal priority
//! when that is refused. It records how late each packet went out relative
//! to its due time: that is the bed's own timing error, reported as its
//! fidelity.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A packet that goes out later than this after its due time counts as
/// late in the fidelity figures.
pub const LATE: Duration = Duration::from_millis(2);
/// The longest a relay thread sleeps without looking at its stop flag.
const MAX_SLEEP: Duration = Duration::from_millis(20);
/// Packets read per wakeup before the due ones get written.
const READ_BATCH: usize = 1024;

/// Opens a new TUN device (IFF_TUN | IFF_NO_PI, non-blocking) in the
/// calling thread's network namespace. The device lives as long as the
/// descriptor.
pub fn open_tun(name: &str) -> io::Result<OwnedFd> {
    let path = CString::new("/dev/net/tun").expect("no NUL");
    // SAFETY: open(2) with a valid C string.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor open(2) just returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a zeroed ifreq is valid; the name is copied with room for
    // its NUL, and TUNSETIFF reads one ifreq.
    let rc = unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        if name.len() >= ifr.ifr_name.len() {
            return Err(io::Error::other(format!("device name {name:?} too long")));
        }
        for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &ifr)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// What one direction of the relay saw and did.
#[derive(Clone, Debug, Default)]
pub struct DirectionStats {
    /// IPv4 packets for the other side, read from the device.
    pub packets: u64,
    /// Of those, dropped on purpose.
    pub lost: u64,
    /// Packets not forwarded because they were not IPv4 for the other side.
    pub foreign: u64,
    pub write_errors: u64,
    /// Packets written more than [`LATE`] after their due time, and the
    /// worst lateness.
    pub late: u64,
    pub late_max: Duration,
    pub max_queue: usize,
    /// TCP segments by flags: SYN alone, SYN with ACK, any RST, and RST
    /// without ACK (the kernel's stateless answer to a segment that
    /// matches no socket).
    pub syn: u64,
    pub syn_ack: u64,
    pub rst: u64,
    pub bare_rst: u64,
}

/// Both directions: client to server, server to client.
#[derive(Clone, Debug, Default)]
pub struct RelayStats {
    pub to_server: DirectionStats,
    pub to_client: DirectionStats,
    /// Whether the relay threads got SCHED_FIFO.
    pub realtime: bool,
}

impl RelayStats {
    pub fn forwarded(&self) -> u64 {
        self.to_server.packets - self.to_server.lost + self.to_client.packets - self.to_client.lost
    }

    pub fn late(&self) -> u64 {
        self.to_server.late + self.to_client.late
    }

    pub fn late_max(&self) -> Duration {
        self.to_server.late_max.max(self.to_client.late_max)
    }
}

/// How the relay treats each packet.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub delay: Duration,
    /// Percent of packets dropped, each direction on its own.
    pub loss_percent: f64,
    /// Seeds the loss draws, so a run can be repeated.
    pub seed: u64,
}

/// The running relay; stopped (threads joined) when dropped.
pub struct Relay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(DirectionStats, bool)>>,
}

impl Relay {
    /// Starts forwarding between the client's and the server's TUN device.
    pub fn start(
        client: OwnedFd,
        server: OwnedFd,
        client_ip: Ipv4Addr,
        server_ip: Ipv4Addr,
        link: Link,
    ) -> Relay {
        let stop = Arc::new(AtomicBool::new(false));
        let client = Arc::new(client);
        let server = Arc::new(server);
        let directions = [
            (client.clone(), server.clone(), server_ip, link.seed),
            (server, client, client_ip, link.seed ^ 0x9e37_79b9_7f4a_7c15),
        ];
        let threads = directions
            .into_iter()
            .map(|(from, to, dst, seed)| {
                let stop = stop.clone();
                let link = Link { seed, ..link };
                thread::Builder::new()
                    .name(format!("relay to {dst}"))
                    .spawn(move || {
                        let realtime = try_realtime();
                        let stats = forward(from.as_raw_fd(), to.as_raw_fd(), dst, link, &stop);
                        (stats, realtime)
                    })
                    .expect("spawn a relay thread")
            })
            .collect();
        Relay { stop, threads }
    }

    /// Stops both threads and returns what they counted.
    pub fn stop(mut self) -> RelayStats {
        self.finish()
    }

    fn finish(&mut self) -> RelayStats {
        self.stop.store(true, Ordering::SeqCst);
        let mut out = RelayStats {
            realtime: true,
            ..RelayStats::default()
        };
        for (i, t) in self.threads.drain(..).enumerate() {
            let (stats, realtime) = t.join().unwrap_or_default();
            out.realtime &= realtime;
            if i == 0 {
                out.to_server = stats;
            } else {
                out.to_client = stats;
            }
        }
        out
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.finish();
    }
}

/// SCHED_FIFO priority 10 for the calling thread, if allowed.
fn try_realtime() -> bool {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: pid 0 is the calling thread; the parameter is valid.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// A small deterministic generator (splitmix64) for the loss draws.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: f64) -> bool {
        percent > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 100.0 < percent
    }
}

/// One direction: reads from `from`, writes to `to`, until `stop`.
fn forward(from: RawFd, to: RawFd, dst: Ipv4Addr, link: Link, stop: &AtomicBool) -> DirectionStats {
    let mut st = DirectionStats::default();
    let mut rng = SplitMix(link.seed);
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    let dst = dst.octets();
    while !stop.load(Ordering::Relaxed) {
        // Out with everything due.
        while let Some((due, _)) = queue.front() {
            let now = Instant::now();
            if *due > now {
                break;
            }
            let (due, packet) = queue.pop_front().expect("front exists");
            send(to, &packet, now - due, &mut st);
        }
        let sleep = queue
            .front()
            .map_or(MAX_SLEEP, |(due, _)| {
                due.saturating_duration_since(Instant::now())
            })
            .min(MAX_SLEEP);
        if !readable(from, sleep) {
            continue;
        }
        for _ in 0..READ_BATCH {
            // SAFETY: read(2) into a buffer of the length passed.
            let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let read_at = Instant::now();
            let packet = &buf[..n as usize];
            if packet.len() < 20 || packet[0] >> 4 != 4 || packet[16..20] != dst {
                st.foreign += 1;
                continue;
            }
            st.packets += 1;
            count_tcp(packet, &mut st);
            if rng.chance(link.loss_percent) {
                st.lost += 1;
                continue;
            }
            if link.delay.is_zero() && queue.is_empty() {
                send(to, packet, read_at.elapsed(), &mut st);
            } else {
                queue.push_back((read_at + link.delay, packet.to_vec()));
            }
        }
        st.max_queue = st.max_queue.max(queue.len());
    }
    st
}

fn send(to: RawFd, packet: &[u8], late: Duration, st: &mut DirectionStats) {
    // SAFETY: write(2) of a buffer of the length passed.
    let n = unsafe { libc::write(to, packet.as_ptr().cast(), packet.len()) };
    if n < 0 {
        st.write_errors += 1;
    }
    if late > LATE {
        st.late += 1;
    }
    st.late_max = st.late_max.max(late);
}

/// Waits up to `timeout` for `fd` to be readable.
fn readable(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    rc > 0 && pfd.revents & libc::POLLIN != 0
}

fn count_tcp(packet: &[u8], st: &mut DirectionStats) {
    let ihl = usize::from(packet[0] & 15) * 4;
    if packet[9] != 6 || packet.len() < ihl + 14 {
        return;
    }
    let flags = packet[ihl + 13];
    let (syn, ack, rst) = (flags & 0x02 != 0, flags & 0x10 != 0, flags & 0x04 != 0);
    if syn && ack {
        st.syn_ack += 1;
    } else if syn {
        st.syn += 1;
    }
    if rst {
        st.rst += 1;
        if !ack {
            st.bare_rst += 1;
        }
    }
}
