//! Taking over the listening sockets of a running process of the same
//! user and service (`Config::take_over`): the successor's end of the
//! exchange that [`crate::control`] sets out, with its wire format in
//! [`crate::control::wire`].
//!
//! Contracts:
//! - Listeners are taken from the process named and from no one else: its
//!   claim on the address is found in the listing ([`crate::claim`]), and
//!   the kernel confirms who listens behind the claim (`SO_PEERCRED`: that
//!   pid, this effective uid). A process of another service is refused
//!   here, before it is asked anything.
//! - Every descriptor received is checked before it is used ([`check`]):
//!   a listening TCP socket of the address's family, bound to exactly the
//!   address this process was asked to serve, sharing its port
//!   (`SO_REUSEPORT`), IPv6 only for an IPv6 address, and no duplicate.
//! - Until [`Pending::commit`], the other process still holds the
//!   listeners and serves from them. Dropping what [`receive`] returned
//!   closes only this process's copies, and the other process goes on as
//!   if nothing had happened (it was told why, when there is a why).
//! - [`Pending::commit`] says `taking` and waits for `done`. With it, the
//!   listeners are this process's alone; without it (a refusal, a closed
//!   connection, no answer within [`STEP_TIMEOUT`]), an error: the other
//!   process keeps them. It confirms only within its own deadline and
//!   grace ([`crate::control::DEADLINE`], [`crate::control::GRACE`]),
//!   both shorter than this wait, so a successor that heard nothing was
//!   not answered.
//!
//! Every wait here is bounded by [`STEP_TIMEOUT`]; this runs before the
//! loop, so it may block.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use crate::claim;
use crate::control::wire::{self, Reply};
use crate::log::Escaped;
use crate::sys::socket::get_int_opt;
use crate::sys::{file, process, unix};

/// The longest wait for any one step: the connect, each reply, the
/// confirmation. Longer than the other process's whole deadline and grace
/// ([`crate::control::DEADLINE`] + [`crate::control::GRACE`]).
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(3);
/// The most listeners taken on one address: one per CPU of the machine
/// that opened them ([`crate::kernel::MAX_TAGGED_CPUS`]).
const MAX_LISTENERS: usize = crate::kernel::MAX_TAGGED_CPUS;
/// The longest reply line: a batch of [`unix::MAX_FDS`] tags of up to
/// 11 characters each, with room to spare.
const REPLY_BUFFER: usize = 4096;

/// Where to take the listeners on one address from: a claim of the named
/// process, of this user and this service.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) from: u32,
    pub(crate) addr: SocketAddr,
    /// The claim's abstract name, to connect to.
    pub(crate) name: Vec<u8>,
}

/// Listeners received and checked, not yet confirmed: the other process
/// still holds them too.
pub(crate) struct Pending {
    conn: OwnedFd,
    reader: Reader,
    source: Source,
}

/// A listener received: the socket, and the CPU it was tagged with.
pub(crate) type Received = (StdListener, libc::c_int);

/// Finds the claim of process `from` on `addr` for `service`, or says in
/// one sentence why there is none to take over.
pub(crate) fn find(from: u32, addr: SocketAddr, service: &str) -> io::Result<Source> {
    let fail = |kind, why: String| {
        io::Error::new(
            kind,
            format!("cannot take over {addr} from process {from}: {why}"),
        )
    };
    if addr.port() == 0 {
        return Err(fail(
            io::ErrorKind::InvalidInput,
            "name the port it serves, not 0".into(),
        ));
    }
    let listing = claim::list().map_err(|e| {
        fail(
            e.kind(),
            format!("cannot list the services announced here ({e})"),
        )
    })?;
    let uid = process::euid();
    // A claim of another uid is never taken, nor shown: anyone can make
    // one. One whose owner the kernel cannot tell is tried, and the
    // kernel's word on the connection decides.
    let theirs: Vec<&claim::Listed> = listing
        .claims
        .iter()
        .filter(|c| c.pid == from && c.owner.is_none_or(|o| o == uid))
        .collect();
    let text = addr.to_string();
    let Some(found) = theirs.iter().find(|c| c.addr == text.as_bytes()) else {
        let why = if theirs.is_empty() {
            format!(
                "it announces no service of this user (uid {uid}): it is not a drainport of this user, or not running"
            )
        } else {
            let served: Vec<String> = theirs.iter().map(|c| c.addr_text()).collect();
            format!(
                "it does not serve that address (it serves {})",
                served.join(", ")
            )
        };
        return Err(fail(io::ErrorKind::NotFound, why));
    };
    if !found.serves(service) {
        return Err(fail(
            io::ErrorKind::InvalidInput,
            format!(
                "it serves {} there, and this is {service}; a takeover stays within one service",
                Escaped(&found.service)
            ),
        ));
    }
    Ok(Source {
        from,
        addr,
        name: found.name.clone(),
    })
}

/// Asks `source` for its listeners, as `service`, and receives and checks
/// every one. The other process keeps them until [`Pending::commit`].
pub(crate) fn receive(source: Source, service: &str) -> io::Result<(Vec<Received>, Pending)> {
    let (addr, from) = (source.addr, source.from);
    let fail = |why: String| {
        io::Error::other(format!(
            "cannot take over {addr} from process {from}: {why}"
        ))
    };
    let conn = unix::connect_abstract(&source.name, STEP_TIMEOUT).map_err(|e| {
        fail(match e.kind() {
            io::ErrorKind::ConnectionRefused => {
                "it does not hand its listeners over (it is still starting, or a drainport older than takeover)".into()
            }
            io::ErrorKind::WouldBlock => format!(
                "its control channel took no connection within {}s",
                STEP_TIMEOUT.as_secs()
            ),
            _ => format!("cannot reach its control channel ({e})"),
        })
    })?;
    let uid = process::euid();
    let peer =
        unix::peer(conn.as_fd()).map_err(|e| fail(format!("cannot tell who answers ({e})")))?;
    if peer.pid != source.from || peer.uid != uid {
        return Err(fail(format!(
            "its claim is held by process {} of uid {}, not by it as uid {uid}",
            peer.pid, peer.uid
        )));
    }
    exchange(conn, source, service)
}

/// The exchange on `conn`, connected to `source`'s claim: asks, receives
/// and checks every batch.
fn exchange(conn: OwnedFd, source: Source, service: &str) -> io::Result<(Vec<Received>, Pending)> {
    let (addr, from) = (source.addr, source.from);
    let fail = |why: String| {
        io::Error::other(format!(
            "cannot take over {addr} from process {from}: {why}"
        ))
    };
    let mut pending = Pending {
        conn,
        reader: Reader::new(),
        source,
    };
    let ask = wire::take(&addr.to_string(), service);
    pending
        .send(ask.as_bytes())
        .map_err(|e| fail(format!("cannot ask it ({e})")))?;
    let mut taken: Vec<Received> = Vec::new();
    let mut seen = Vec::new();
    loop {
        let line = pending.reader.line(&pending.conn).map_err(&fail)?;
        let (cpus, left) = match wire::reply(&line) {
            Some(Reply::Fds { cpus, left }) => (cpus, left),
            Some(Reply::Refused(reason)) => {
                return Err(fail(format!("it refused: {}", Escaped(reason))));
            }
            Some(Reply::Done | Reply::Stats(_)) | None => {
                return Err(pending.give_up("it broke the protocol"));
            }
        };
        let fds = mem::take(&mut pending.reader.fds);
        if fds.len() != cpus.len() {
            let why = format!(
                "a batch carried {} descriptors for {} tags",
                fds.len(),
                cpus.len()
            );
            return Err(pending.give_up(&why));
        }
        if taken.len() + cpus.len() + left > MAX_LISTENERS {
            let why = format!("it has more than {MAX_LISTENERS} listeners there");
            return Err(pending.give_up(&why));
        }
        let k = cpus.len();
        for (fd, cpu) in fds.into_iter().zip(cpus) {
            let n = taken.len() + 1;
            let listener = check(fd, addr, &mut seen)
                .map_err(|why| pending.give_up(&format!("listener {n}: {why}")))?;
            taken.push((listener, cpu));
        }
        pending
            .send(wire::got(k).as_bytes())
            .map_err(|e| fail(format!("cannot answer it ({e})")))?;
        if left == 0 {
            return Ok((taken, pending));
        }
    }
}

impl Pending {
    /// The process listeners are taken from.
    pub(crate) fn from(&self) -> u32 {
        self.source.from
    }

    /// The address they serve.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.source.addr
    }

    /// Says `taking` and waits for `done`: with it, the listeners are this
    /// process's alone. An error means the other process keeps them, and
    /// this one must let its copies go without touching them.
    pub(crate) fn commit(mut self) -> io::Result<()> {
        let fail = |why: String| {
            io::Error::other(format!(
                "cannot take over {} from process {}: {why}",
                self.source.addr, self.source.from
            ))
        };
        self.send(wire::TAKING)
            .map_err(|e| fail(format!("cannot tell it ({e}); it keeps its listeners")))?;
        let line = self
            .reader
            .line(&self.conn)
            .map_err(|e| fail(format!("{e}; it keeps its listeners")))?;
        match wire::reply(&line) {
            Some(Reply::Done) => Ok(()),
            Some(Reply::Refused(reason)) => Err(fail(format!(
                "it refused at the last step: {}",
                Escaped(reason)
            ))),
            _ => Err(fail("it broke the protocol; it keeps its listeners".into())),
        }
    }

    fn send(&self, line: &[u8]) -> io::Result<()> {
        let sent = unix::send(self.conn.as_fd(), line, &[])?;
        if sent < line.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "a short write"));
        }
        Ok(())
    }

    /// Tells the other process why this one gives up (it says so in its
    /// log), and returns the error for this one.
    fn give_up(&self, why: &str) -> io::Error {
        let _ = self.send(wire::refused(why).as_bytes());
        io::Error::other(format!(
            "cannot take over {} from process {}: {why}",
            self.source.addr, self.source.from
        ))
    }
}

/// Lines from the other process, with the descriptors that came with
/// them.
struct Reader {
    buf: Vec<u8>,
    len: usize,
    fds: Vec<OwnedFd>,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            buf: vec![0; REPLY_BUFFER],
            len: 0,
            fds: Vec::new(),
        }
    }

    /// The next line, without its `\n`, waiting at most [`STEP_TIMEOUT`]
    /// for each read. The error says what happened, in words.
    fn line(&mut self, conn: &OwnedFd) -> Result<Vec<u8>, String> {
        loop {
            if let Some(end) = self.buf[..self.len].iter().position(|&b| b == b'\n') {
                let line = self.buf[..end].to_vec();
                self.buf.copy_within(end + 1..self.len, 0);
                self.len -= end + 1;
                return Ok(line);
            }
            if self.len == self.buf.len() {
                return Err("it sent a line too long".into());
            }
            match unix::recv(conn.as_fd(), &mut self.buf[self.len..], &mut self.fds) {
                Ok(0) => return Err("it closed the connection".into()),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(format!("no answer within {}s", STEP_TIMEOUT.as_secs()));
                }
                Err(e) => return Err(format!("cannot read its answer ({e})")),
            }
        }
    }
}

/// Checks that `fd` is a listening TCP socket bound to exactly `addr`
/// that shares its port, and no socket seen before (`seen` holds their
/// identities); makes it non-blocking. Says what is wrong otherwise.
pub(crate) fn check(
    fd: OwnedFd,
    addr: SocketAddr,
    seen: &mut Vec<(u64, u64)>,
) -> Result<StdListener, String> {
    let raw = fd.as_fd();
    let st = file::stat(raw).map_err(|e| format!("cannot be examined ({e})"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err("is not a socket".into());
    }
    let identity = (st.st_dev, st.st_ino);
    if seen.contains(&identity) {
        return Err("is the same socket as another one".into());
    }
    seen.push(identity);
    let opt = |level, name| {
        get_int_opt(raw, level, name).map_err(|e| format!("cannot be examined ({e})"))
    };
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    if opt(libc::SOL_SOCKET, libc::SO_DOMAIN)? != family {
        let what = if family == libc::AF_INET {
            "IPv4"
        } else {
            "IPv6"
        };
        return Err(format!("is not an {what} socket"));
    }
    if opt(libc::SOL_SOCKET, libc::SO_TYPE)? != libc::SOCK_STREAM
        || opt(libc::SOL_SOCKET, libc::SO_PROTOCOL)? != libc::IPPROTO_TCP
    {
        return Err("is not a TCP socket".into());
    }
    if opt(libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 1 {
        return Err("is not listening".into());
    }
    if opt(libc::SOL_SOCKET, libc::SO_REUSEPORT)? != 1 {
        return Err("does not share its port (SO_REUSEPORT is off)".into());
    }
    if family == libc::AF_INET6 && opt(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? != 1 {
        return Err("takes IPv4 clients too (IPV6_V6ONLY is off)".into());
    }
    let listener = StdListener::from(fd);
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot be examined ({e})"))?;
    if local != addr {
        return Err(format!("is bound to {local}, not {addr}"));
    }
    // The flag belongs to the open file description, which both processes
    // share; both want it set.
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot be made non-blocking ({e})"))?;
    Ok(listener)
}

// The tests' own raw calls borrow the listeners' descriptors.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests;
