//! What protects this process's release, said once at startup: for the
//! addresses it serves, what keeps a drain from resetting a client or
//! making one wait, found out from the kernel itself rather than from its
//! version number; and where nothing does, the fixes, easiest first.
//!
//! In order of preference, for one address:
//! - **shared sockets**: passed by the service manager, which keeps them;
//!   a drain only stops accepting, on any kernel;
//! - **steering**: the kernel gives a SYN to a listener tagged with its CPU
//!   (probed, [`crate::kernel::probe`]), so a drain clears its tags and new
//!   clients go to siblings;
//! - **migration**: `net.ipv4.tcp_migrate_req=1` hands what a closing
//!   listener holds (its queue, its handshakes in flight) to a sibling;
//! - **the SYN filter** (`CAP_NET_ADMIN`): new clients that reach a
//!   draining process are dropped, and their SYN, resent a second later,
//!   finds a sibling;
//! - **nothing**: clients that connect during a drain may be reset.
//!
//! A port whose sockets this process took over from the one it replaced
//! (`--take-over`) says so first: a successor that takes them over in turn
//! closes no listening socket, on any kernel. The guard above still says
//! what a drain without a successor does.
//!
//! The line is pure text from what was found ([`Found`]), so every variant
//! is tested without the kernel that would produce it.

use std::fmt::Write as _;

use crate::kernel::{self, Steering};
use crate::listener::{self, Origin, Port};
use crate::log::say;
use crate::peer::Address;

/// What keeps new clients away from a drain on one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    Shared,
    /// Steering, and whether migration backs it up.
    Steering {
        migration: bool,
    },
    Migration,
    Filter,
    Nothing,
}

/// The fixes for an unprotected release, easiest first.
fn fixes() -> [String; 5] {
    let (major, minor) = kernel::STEERING_KERNEL;
    [
        "start each new process with --take-over, the pid of the one it replaces \
         (scripts/rolling-restart and the systemd recipe do)"
            .into(),
        "set net.ipv4.tcp_migrate_req=1 (Linux 5.14 or later: this alone is enough)".into(),
        "pass the listening sockets from a socket unit (contrib/drainport.socket)".into(),
        format!("run Linux {major}.{minor} or later"),
        "grant CAP_NET_ADMIN, for the SYN filter".into(),
    ]
}

/// What the kernel and this process's privileges allow, as far as the
/// release of a bound address goes.
#[derive(Debug)]
struct Found {
    /// The probe's answer; `None` when no address is bound, so nothing was asked.
    steering: Option<Steering>,
    migrate_req: Option<bool>,
    /// Whether the SYN filter may be attached; only asked when it matters.
    filter: bool,
    kernel: Option<(u32, u32)>,
}

/// Works out what protects each address of `ports` and says so in one line,
/// or one per kind of protection when the addresses differ.
pub(crate) fn report(pid: u32, ports: &[Port]) {
    let bound = ports.iter().any(|p| !p.shared);
    let steering = bound.then(kernel::probe);
    let migrate_req = kernel::migrate_req();
    let filter = bound
        && !steering.as_ref().is_some_and(Steering::steers)
        && migrate_req != Some(true)
        && listener::filter_permitted();
    let found = Found {
        steering,
        migrate_req,
        filter,
        kernel: kernel::kernel_version(),
    };
    let guarded: Vec<(Address, Guard, bool)> = ports
        .iter()
        .map(|p| {
            (
                p.addr.clone(),
                guard(p.shared, &found),
                p.origin == Origin::Taken,
            )
        })
        .collect();
    for line in lines(pid, &guarded, &found) {
        say!("{line}");
    }
}

fn guard(shared: bool, found: &Found) -> Guard {
    let migration = found.migrate_req == Some(true);
    if shared {
        Guard::Shared
    } else if found.steering.as_ref().is_some_and(Steering::steers) {
        Guard::Steering { migration }
    } else if migration {
        Guard::Migration
    } else if found.filter {
        Guard::Filter
    } else {
        Guard::Nothing
    }
}

/// The lines for addresses, their guards and whether they were taken
/// over: one when they all have the same, else one per kind, naming its
/// addresses.
fn lines(pid: u32, guarded: &[(Address, Guard, bool)], found: &Found) -> Vec<String> {
    let mut kinds: Vec<(Guard, bool)> = Vec::new();
    for &(_, g, taken) in guarded {
        if !kinds.contains(&(g, taken)) {
            kinds.push((g, taken));
        }
    }
    kinds
        .iter()
        .map(|&kind| {
            let mut line = format!("Process {pid} release protection");
            if kinds.len() > 1 {
                let addrs: Vec<String> = guarded
                    .iter()
                    .filter(|(_, g, t)| (*g, *t) == kind)
                    .map(|(a, _, _)| a.to_string())
                    .collect();
                let _ = write!(line, " for {}", addrs.join(" "));
            }
            let (guard, taken) = kind;
            if taken {
                let _ = write!(
                    line,
                    ": takeover (these listeners were taken over from the process this one \
                     replaced; a successor that takes them over in turn closes none, on any \
                     kernel); without a successor,"
                );
            } else {
                line.push(':');
            }
            let _ = write!(line, " {}", describe(guard, found));
            line
        })
        .collect()
}

fn describe(guard: Guard, found: &Found) -> String {
    let kernel = match found.kernel {
        Some((major, minor)) => format!("this kernel (Linux {major}.{minor})"),
        None => "this kernel".to_owned(),
    };
    let no_steering = match &found.steering {
        Some(Steering::Unknown(e)) => {
            format!("{kernel} could not be asked whether it steers by CPU tag ({e})")
        }
        _ => format!("{kernel} does not steer new connections by CPU tag"),
    };
    match guard {
        Guard::Shared => "shared sockets (passed by the service manager, which keeps them: \
                          a drain only stops accepting)"
            .to_owned(),
        Guard::Steering { migration: false } => {
            "steering (this kernel steers new connections by CPU tag: a draining process \
             receives none while a sibling runs)"
                .to_owned()
        }
        Guard::Steering { migration: true } => {
            "steering (this kernel steers new connections by CPU tag: a draining process \
             receives none while a sibling runs), and migration (net.ipv4.tcp_migrate_req=1)"
                .to_owned()
        }
        Guard::Migration => format!(
            "migration (net.ipv4.tcp_migrate_req=1: a closing listener hands its queue \
             and its handshakes in flight to a sibling); {no_steering}, so clients that \
             connect during a drain may be admitted by the draining process, which serves them"
        ),
        Guard::Filter => format!(
            "the SYN filter; {no_steering}, so clients that connect during a drain are \
             dropped and retry about a second later"
        ),
        Guard::Nothing => {
            let migration = match found.migrate_req {
                Some(_) => "net.ipv4.tcp_migrate_req is 0",
                None => "net.ipv4.tcp_migrate_req is missing (Linux 5.14 or later has it)",
            };
            format!(
                "nothing: {no_steering}, {migration} and the SYN filter needs \
                 CAP_NET_ADMIN, so clients that connect during a drain may be reset. \
                 Fixes, easiest first: {}",
                fixes().join("; or ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn found(steering: Steering, migrate_req: Option<bool>, filter: bool) -> Found {
        Found {
            steering: Some(steering),
            migrate_req,
            filter,
            kernel: Some((6, 1)),
        }
    }

    fn addr(s: &str) -> Address {
        Address::Ip(s.parse().unwrap())
    }

    #[test]
    fn each_kernel_behaviour_gets_its_guard() {
        let steers = found(Steering::Steers, Some(false), false);
        assert_eq!(guard(false, &steers), Guard::Steering { migration: false });
        assert_eq!(guard(true, &steers), Guard::Shared);
        let migrates = found(Steering::Ignores, Some(true), true);
        assert_eq!(guard(false, &migrates), Guard::Migration);
        let filters = found(Steering::Ignores, Some(false), true);
        assert_eq!(guard(false, &filters), Guard::Filter);
        let bare = found(Steering::Ignores, None, false);
        assert_eq!(guard(false, &bare), Guard::Nothing);
        assert_eq!(guard(true, &bare), Guard::Shared);
    }

    #[test]
    fn nothing_names_the_fixes_easiest_first() {
        let bare = found(Steering::Ignores, Some(false), false);
        let lines = lines(7, &[(addr("0.0.0.0:80"), Guard::Nothing, false)], &bare);
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert!(
            line.starts_with(
                "Process 7 release protection: nothing: this kernel (Linux 6.1) does not steer"
            ),
            "{line}"
        );
        let at = |needle: &str| {
            line.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} in {line}"))
        };
        assert!(at("--take-over") < at("tcp_migrate_req=1"));
        assert!(at("tcp_migrate_req=1") < at("socket unit"));
        assert!(at("socket unit") < at("Linux 6.2 or later"));
        assert!(at("Linux 6.2 or later") < at("grant CAP_NET_ADMIN"));
        assert!(!line.contains('\n'));
    }

    #[test]
    fn addresses_are_named_only_when_their_guards_differ() {
        let steers = found(Steering::Steers, Some(false), false);
        let same = lines(
            7,
            &[
                (
                    addr("0.0.0.0:80"),
                    Guard::Steering { migration: false },
                    false,
                ),
                (addr("[::]:80"), Guard::Steering { migration: false }, false),
            ],
            &steers,
        );
        assert_eq!(same.len(), 1);
        assert!(
            same[0].starts_with("Process 7 release protection: steering ("),
            "{same:?}"
        );
        let mixed = lines(
            7,
            &[
                (addr("0.0.0.0:80"), Guard::Shared, false),
                (
                    addr("[::1]:81"),
                    Guard::Steering { migration: false },
                    false,
                ),
                (addr("10.0.0.1:80"), Guard::Shared, false),
            ],
            &steers,
        );
        assert_eq!(
            mixed
                .iter()
                .map(|l| l.split(':').next().unwrap())
                .collect::<Vec<_>>(),
            [
                "Process 7 release protection for 0.0.0.0",
                "Process 7 release protection for ["
            ]
        );
        assert!(
            mixed[0].contains("for 0.0.0.0:80 10.0.0.1:80: shared sockets"),
            "{mixed:?}"
        );
        assert!(mixed[1].contains("for [::1]:81: steering"), "{mixed:?}");
    }

    #[test]
    fn a_probe_that_could_not_run_says_why() {
        let unknown = found(
            Steering::Unknown(io::Error::other("no loopback")),
            Some(false),
            false,
        );
        let line = describe(Guard::Nothing, &unknown);
        assert!(
            line.contains("could not be asked whether it steers by CPU tag (no loopback)"),
            "{line}"
        );
        let old = Found {
            migrate_req: None,
            ..found(Steering::Ignores, None, false)
        };
        assert!(describe(Guard::Nothing, &old).contains("tcp_migrate_req is missing"));
    }

    #[test]
    fn listeners_taken_over_say_so_first() {
        let bare = found(Steering::Ignores, Some(false), false);
        let taken = lines(7, &[(addr("0.0.0.0:80"), Guard::Nothing, true)], &bare);
        assert_eq!(taken.len(), 1);
        assert!(
            taken[0].starts_with(
                "Process 7 release protection: takeover (these listeners were taken over from \
                 the process this one replaced; a successor that takes them over in turn closes \
                 none, on any kernel); without a successor, nothing: this kernel (Linux 6.1)"
            ),
            "{taken:?}"
        );
        // Beside a port of its own, each kind has its line.
        let mixed = lines(
            7,
            &[
                (addr("0.0.0.0:80"), Guard::Nothing, true),
                (addr("0.0.0.0:81"), Guard::Nothing, false),
            ],
            &bare,
        );
        assert_eq!(mixed.len(), 2);
        assert!(mixed[0].contains("for 0.0.0.0:80: takeover ("), "{mixed:?}");
        assert!(mixed[1].contains("for 0.0.0.0:81: nothing: "), "{mixed:?}");
    }
}
