//! The systemd readiness protocol, spoken by hand: one datagram per state
//! change to the Unix socket named by `NOTIFY_SOCKET`.
//!
//! Without that variable every call is a no-op. A failed send is reported
//! once and then ignored: a missing supervisor must not stop the service.

use std::fmt;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::log::say;

/// Sends `KEY=VALUE` lines to the service manager.
pub(crate) struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    failed: bool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`. A name starting with `@` is in the abstract
    /// namespace, as systemd documents.
    pub(crate) fn from_env() -> io::Result<Notifier> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(Notifier {
                target: None,
                failed: false,
            });
        };
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(&path)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            target: Some((socket, addr)),
            failed: false,
        })
    }

    /// Whether a service manager is listening.
    pub(crate) fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message of newline-separated assignments. Nothing is
    /// formatted when no service manager listens.
    pub(crate) fn send(&mut self, state: fmt::Arguments<'_>) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(state.to_string().as_bytes(), addr) {
            if !self.failed {
                self.failed = true;
                say!(
                    "Process {} cannot notify the service manager: {e}",
                    std::process::id()
                );
            }
        }
    }
}
