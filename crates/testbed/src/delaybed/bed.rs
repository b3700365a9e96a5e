//! The bed: a client and a server namespace, each with one TUN device,
//! joined by the relay.
//!
//! ```text
//!  client ns  10.77.N.2/24 (TUN dpcli0)       server ns  10.77.N.1/24 (TUN dpsrv0)
//!           \                                          /
//!            +---- relay threads (this process) ------+
//! ```
//!
//! Each namespace's only routes are loopback and the /24 on its TUN
//! device, so nothing can leave the machine. Both are new for every bed,
//! with names made of this process's pid and a counter; the subnet's third
//! number comes from them too, so that two beds (a test and a benchmark,
//! say) are told apart in a capture. Dropping the bed stops the relay,
//! which closes the devices, and deletes both namespaces, on a panic too.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::netns::Namespace;
use super::relay::{Link, Relay, RelayStats, open_tun};

const CLIENT_DEV: &str = "dpcli0";
const SERVER_DEV: &str = "dpsrv0";

pub struct Bed {
    // Declared first, dropped first: the devices go before the namespaces.
    relay: Option<Relay>,
    pub client: Namespace,
    pub server: Namespace,
    pub client_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    pub link: Link,
}

impl Bed {
    /// Builds both namespaces and their devices and starts the relay.
    pub fn up(link: Link) -> Result<Bed, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() as usize;
        let subnet = (pid * 7 + n) % 254 + 1;
        let server_ip = Ipv4Addr::new(10, 77, subnet as u8, 1);
        let client_ip = Ipv4Addr::new(10, 77, subnet as u8, 2);
        let client = Namespace::create(format!("dp-delay-{pid}-{n}-cli"))?;
        let server = Namespace::create(format!("dp-delay-{pid}-{n}-srv"))?;
        for ns in [&client, &server] {
            // No IPv6 chatter through the relay; where IPv6 is missing
            // altogether there is nothing to turn off.
            let _ = ns.set_sysctl("net.ipv6.conf.all.disable_ipv6", "1");
            let _ = ns.set_sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        }
        // Many short connections from one address.
        client.set_sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        client.set_sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
        let client_fd = make_device(&client, CLIENT_DEV, client_ip)?;
        let server_fd = make_device(&server, SERVER_DEV, server_ip)?;
        let relay = Relay::start(client_fd, server_fd, client_ip, server_ip, link);
        Ok(Bed {
            relay: Some(relay),
            client,
            server,
            client_ip,
            server_ip,
            link,
        })
    }

    /// Stops the relay and returns its counters; the namespaces stay until
    /// the bed is dropped.
    pub fn stop_relay(&mut self) -> RelayStats {
        self.relay.take().map(Relay::stop).unwrap_or_default()
    }
}

/// A TUN device made inside `ns` (from a thread that entered it), with its
/// address and the /24 route, up.
fn make_device(
    ns: &Namespace,
    dev: &'static str,
    addr: Ipv4Addr,
) -> Result<std::os::fd::OwnedFd, String> {
    let fd = ns
        .run(move || open_tun(dev))?
        .map_err(|e| format!("cannot create TUN device {dev} in {}: {e}", ns.name()))?;
    ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
    ns.ip(&[
        "link",
        "set",
        "dev",
        dev,
        "mtu",
        "1500",
        "txqueuelen",
        "10000",
        "up",
    ])?;
    Ok(fd)
}
