//! The kernel's cap on the listen backlog. `listen(2)` takes the smaller of
//! the backlog asked for and `net.core.somaxconn` (of the network
//! namespace), without a word; startup says so instead.

use std::fs;

/// Where the cap is read: the caller's own network namespace's.
const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

/// The backlog the kernel will give when asked for `asked`, if that is
/// less. `None` also when the cap cannot be read: nothing is known then.
pub(crate) fn capped(asked: u32) -> Option<u32> {
    let text = fs::read_to_string(SOMAXCONN).ok()?;
    cap(asked, text.trim().parse().ok()?)
}

/// `somaxconn` when it is less than `asked`.
fn cap(asked: u32, somaxconn: u32) -> Option<u32> {
    (asked > somaxconn).then_some(somaxconn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_backlog_over_the_cap_is_capped() {
        assert_eq!(cap(100_000, 4096), Some(4096));
        assert_eq!(cap(4097, 4096), Some(4096));
        assert_eq!(cap(4096, 4096), None);
        assert_eq!(cap(1024, 4096), None);
    }

    #[test]
    fn the_cap_is_read_from_proc() {
        let somaxconn: u32 = fs::read_to_string(SOMAXCONN)
            .expect("readable")
            .trim()
            .parse()
            .expect("a number");
        assert_eq!(capped(somaxconn), None);
        if somaxconn < u32::MAX {
            assert_eq!(capped(somaxconn + 1), Some(somaxconn));
        }
    }
}
