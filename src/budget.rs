//! The process-wide budget for client buffers
//! ([`Config::max_buffers`](crate::Config::max_buffers)): what the
//! connections' own buffers hold in all, which connections hold the most,
//! and the log line when some are closed for it.
//!
//! Guarantees:
//! - [`Budget::held`] is the sum of what every live [`Share`] last
//!   counted: for each connection with buffers of its own, their capacities
//!   (what the allocator handed out, which is what resident memory can
//!   pay, not what happens to be filled) and the box that holds them. A
//!   share gives its count back when it is dropped, with the buffers,
//!   wherever that happens, so the sum cannot drift.
//! - A connection without buffers of its own has no share and costs
//!   nothing here: an idle or ping-pong client never touches the budget.
//! - [`Classes`] hands out a connection among the largest in O(1)
//!   amortized, never by a walk over every client. Connections are filed
//!   by size class, the bit length of what they hold, so that each class
//!   holds up to twice the one below (Redis 7 files its clients for
//!   `maxmemory-clients` the same way), and the highest class is taken
//!   first. A connection is filed again only when its class changes: at
//!   most once per doubling of its buffers.
//! - [`Report`] turns any number of closes into at most one log line per
//!   [`REPORT_INTERVAL`], and loses none: what is not reported yet is due.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The least time between two log lines about closed clients.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Stale entries allowed beyond one per live share before [`Classes`] is
/// compacted.
const STALE_SLACK: usize = 64;
/// One class per bit length of a byte count, 0 included.
const CLASSES: usize = usize::BITS as usize + 1;

/// The budget and what is held against it, shared by the loop's
/// [`Context`](crate::conn::Context) and every [`Share`].
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    held: Cell<usize>,
    /// Live shares: the connections with buffers of their own.
    shares: Cell<usize>,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Rc<Budget> {
        Rc::new(Budget {
            limit,
            held: Cell::new(0),
            shares: Cell::new(0),
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes the connections' buffers held when last counted.
    pub(crate) fn held(&self) -> usize {
        self.held.get()
    }

    /// Connections with buffers of their own.
    pub(crate) fn shares(&self) -> usize {
        self.shares.get()
    }

    /// The buffers hold more than the budget: time to close the largest.
    pub(crate) fn over(&self) -> bool {
        self.held.get() > self.limit
    }
}

/// One connection's part of the budget, kept with its buffers and dropped
/// with them.
#[derive(Debug)]
pub(crate) struct Share {
    budget: Rc<Budget>,
    counted: usize,
    /// The stamp of this share's entry in [`Classes`], or 0: not filed.
    stamp: u32,
    /// The class it is filed under, while `stamp` is not 0.
    class: u8,
}

impl Share {
    pub(crate) fn new(budget: &Rc<Budget>) -> Share {
        budget.shares.set(budget.shares.get() + 1);
        Share {
            budget: Rc::clone(budget),
            counted: 0,
            stamp: 0,
            class: 0,
        }
    }

    /// The buffers now hold `bytes`. Returns the class to file the
    /// connection under when it is not filed under it already.
    pub(crate) fn count(&mut self, bytes: usize) -> Option<u8> {
        let held = self.budget.held.get() - self.counted + bytes;
        self.budget.held.set(held);
        self.counted = bytes;
        let class = class_of(bytes);
        (self.stamp == 0 || class != self.class).then_some(class)
    }

    /// What the buffers held when last counted.
    pub(crate) fn counted(&self) -> usize {
        self.counted
    }

    /// Filed under `class` with `stamp`, which [`Classes::file`] gave.
    pub(crate) fn filed(&mut self, class: u8, stamp: u32) {
        self.class = class;
        self.stamp = stamp;
    }

    /// Its entry was taken by [`Classes::pop`]: the next count files it
    /// again.
    pub(crate) fn unfile(&mut self) {
        self.stamp = 0;
    }

    /// The stamp of its entry in [`Classes`], or 0.
    pub(crate) fn stamp(&self) -> u32 {
        self.stamp
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let b = &self.budget;
        b.held.set(b.held.get() - self.counted);
        b.shares.set(b.shares.get() - 1);
    }
}

/// The size class of `bytes`: its bit length.
pub(crate) fn class_of(bytes: usize) -> u8 {
    (usize::BITS - bytes.leading_zeros()) as u8
}

/// One filing: the connection in `key`, if its share still carries `stamp`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: u32,
    stamp: u32,
}

/// Connections with buffers, by size class, to find the largest.
///
/// Lazy, like the deadline queue: filing a connection under a new class
/// pushes an entry and leaves the old one stale, recognised when it
/// surfaces because the connection's share no longer carries its stamp (a
/// connection gone, or given new buffers since, carries another or none).
/// Stale entries are bounded: when they could outnumber the live ones,
/// [`Classes::compact`] drops them, paid for by the filings that made them.
/// So a stale entry lives through fewer than `2 × live + 64` filings, far
/// fewer than the 2^32 after which its stamp could come round again.
#[derive(Debug, Default)]
pub(crate) struct Classes {
    /// Per class, its entries; allocated at the first filing.
    lists: Vec<Vec<Entry>>,
    /// Entries in `lists`, live and stale.
    entries: usize,
    /// The last stamp given; 0 is never given.
    stamp: u32,
}

impl Classes {
    /// Files the connection in `key` under `class`, and returns the stamp
    /// its share must carry ([`Share::filed`]).
    pub(crate) fn file(&mut self, key: usize, class: u8) -> u32 {
        if self.lists.is_empty() {
            self.lists = vec![Vec::new(); CLASSES];
        }
        self.stamp = self.stamp.checked_add(1).unwrap_or(1);
        let entry = Entry {
            key: key as u32,
            stamp: self.stamp,
        };
        self.lists[usize::from(class)].push(entry);
        self.entries += 1;
        self.stamp
    }

    /// Stale entries could outnumber the `live` shares: compact now.
    pub(crate) fn crowded(&self, live: usize) -> bool {
        self.entries > 2 * live + STALE_SLACK
    }

    /// Drops every stale entry. `stamp_of(key)` is the stamp the share of
    /// the connection in `key` carries, or 0 for none.
    pub(crate) fn compact(&mut self, stamp_of: impl Fn(usize) -> u32) {
        self.entries = 0;
        for list in &mut self.lists {
            list.retain(|e| stamp_of(e.key as usize) == e.stamp);
            self.entries += list.len();
        }
    }

    /// Takes a connection from the highest class that holds a live one,
    /// and returns its key; its share must then be unfiled
    /// ([`Share::unfile`]). `stamp_of` is as for [`Classes::compact`].
    pub(crate) fn pop(&mut self, stamp_of: impl Fn(usize) -> u32) -> Option<usize> {
        for list in self.lists.iter_mut().rev() {
            while let Some(entry) = list.pop() {
                self.entries -= 1;
                if stamp_of(entry.key as usize) == entry.stamp {
                    return Some(entry.key as usize);
                }
            }
        }
        None
    }

    /// Entries, live and stale.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
    }
}

/// Clients closed for the budget and not reported yet, and when the next
/// line may go.
#[derive(Debug, Default)]
pub(crate) struct Report {
    clients: usize,
    bytes: usize,
    /// No line before then.
    quiet_until: Option<Instant>,
}

/// What one line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    pub(crate) clients: usize,
    pub(crate) bytes: usize,
}

impl Report {
    /// A client that held `bytes` was closed for the budget.
    pub(crate) fn closed(&mut self, bytes: usize) {
        self.clients += 1;
        self.bytes += bytes;
    }

    /// When the next line is due, if there is anything to say.
    pub(crate) fn due(&self, now: Instant) -> Option<Instant> {
        (self.clients > 0).then(|| self.quiet_until.unwrap_or(now))
    }

    /// What to report now, if anything, and at most once per
    /// [`REPORT_INTERVAL`].
    pub(crate) fn take(&mut self, now: Instant) -> Option<Closed> {
        if self.clients == 0 || self.quiet_until.is_some_and(|at| now < at) {
            return None;
        }
        self.quiet_until = Some(now + REPORT_INTERVAL);
        let closed = Closed {
            clients: self.clients,
            bytes: self.bytes,
        };
        self.clients = 0;
        self.bytes = 0;
        Some(closed)
    }
}

/// A byte count for a log line: exact below a KiB, else in KiB, MiB or GiB
/// with at most one decimal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Size(pub(crate) usize);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        let tenths = (value * 10.0).round() / 10.0;
        if tenths.fract() == 0.0 {
            write!(f, "{tenths:.0} {}", UNITS[unit])
        } else {
            write!(f, "{tenths:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::test_rng::Rng;

    #[test]
    fn shares_count_what_they_hold_and_give_it_back_when_dropped() {
        let budget = Budget::new(1000);
        let mut a = Share::new(&budget);
        let mut b = Share::new(&budget);
        assert_eq!(budget.shares(), 2);
        a.count(600);
        b.count(300);
        assert_eq!(budget.held(), 900);
        assert!(!budget.over());
        b.count(500);
        assert_eq!(budget.held(), 1100);
        assert!(budget.over());
        a.count(0);
        assert_eq!(budget.held(), 500);
        drop(b);
        assert_eq!((budget.held(), budget.shares()), (0, 1));
        drop(a);
        assert_eq!((budget.held(), budget.shares()), (0, 0));
    }

    #[test]
    fn a_share_asks_to_be_filed_when_new_unfiled_or_in_a_new_class() {
        let budget = Budget::new(usize::MAX);
        let mut classes = Classes::default();
        let mut share = Share::new(&budget);
        let class = share.count(100).expect("a new share is filed");
        assert_eq!(class, 7);
        share.filed(class, classes.file(3, class));
        // Within its class: nothing to file.
        assert_eq!(share.count(120), None);
        assert_eq!(share.count(64), None);
        // Doubled: a new class.
        assert_eq!(share.count(128), Some(8));
        share.unfile();
        assert_eq!(share.count(128), Some(8), "taken, it is filed again");
    }

    #[test]
    fn classes_hand_out_the_largest_first_and_skip_stale_entries() {
        let budget = Budget::new(0);
        let mut classes = Classes::default();
        let mut shares: BTreeMap<usize, Share> = BTreeMap::new();
        for (key, bytes) in [(0, 100), (1, 70_000), (2, 5_000), (3, 40_000)] {
            let mut share = Share::new(&budget);
            let class = share.count(bytes).unwrap();
            share.filed(class, classes.file(key, class));
            shares.insert(key, share);
        }
        // Key 1 shrinks to a small class, key 2 goes away, key 3 is
        // replaced by new buffers of the same size: their old entries are
        // stale.
        let share = shares.get_mut(&1).unwrap();
        let class = share.count(10).unwrap();
        share.filed(class, classes.file(1, class));
        shares.remove(&2);
        let mut fresh = Share::new(&budget);
        let class = fresh.count(40_000).unwrap();
        fresh.filed(class, classes.file(3, class));
        shares.insert(3, fresh);
        let mut order = Vec::new();
        loop {
            let stamp_of = |key: usize| shares.get(&key).map_or(0, Share::stamp);
            let Some(key) = classes.pop(stamp_of) else {
                break;
            };
            shares.get_mut(&key).unwrap().unfile();
            order.push(key);
        }
        assert_eq!(order, [3, 0, 1]);
        assert_eq!(classes.len(), 0);
    }

    /// Against a model: every pop returns a live share of the highest class
    /// there is, each live share is returned once, and stale entries stay
    /// bounded with compaction.
    #[test]
    fn random_filings_agree_with_the_model() {
        const KEYS: usize = 50;
        for seed in 1..=30u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let budget = Budget::new(0);
            let mut classes = Classes::default();
            let mut shares: Vec<Option<Share>> = (0..KEYS).map(|_| None).collect();
            for _ in 0..4000 {
                let key = rng.below(KEYS);
                match rng.below(8) {
                    0..=4 => {
                        let bytes = 1 << rng.below(20) | rng.below(1000);
                        let share = shares[key].get_or_insert_with(|| Share::new(&budget));
                        if let Some(class) = share.count(bytes) {
                            share.filed(class, classes.file(key, class));
                        }
                    }
                    5 => shares[key] = None,
                    _ => {
                        let stamp_of = |k: usize| shares[k].as_ref().map_or(0, Share::stamp);
                        let top = shares
                            .iter()
                            .flatten()
                            .filter(|s| s.stamp() != 0)
                            .map(|s| class_of(s.counted()))
                            .max();
                        match classes.pop(stamp_of) {
                            Some(k) => {
                                let share = shares[k].as_mut().expect("a live share");
                                assert_eq!(Some(class_of(share.counted())), top, "seed {seed}");
                                share.unfile();
                            }
                            None => assert_eq!(top, None, "seed {seed}"),
                        }
                    }
                }
                if classes.crowded(budget.shares()) {
                    classes.compact(|k| shares[k].as_ref().map_or(0, Share::stamp));
                }
                assert!(classes.len() <= 2 * budget.shares() + STALE_SLACK + 1);
                let sum: usize = shares.iter().flatten().map(Share::counted).sum();
                assert_eq!(budget.held(), sum, "seed {seed}");
            }
        }
    }

    #[test]
    fn a_report_goes_at_once_then_at_most_once_per_interval_and_loses_nothing() {
        let t0 = Instant::now();
        let mut report = Report::default();
        assert_eq!(report.due(t0), None);
        assert_eq!(report.take(t0), None);
        report.closed(100);
        report.closed(50);
        assert_eq!(report.due(t0), Some(t0));
        let first = Closed {
            clients: 2,
            bytes: 150,
        };
        assert_eq!(report.take(t0), Some(first));
        report.closed(7);
        let soon = t0 + REPORT_INTERVAL / 2;
        assert_eq!(report.take(soon), None, "a second line waits");
        assert_eq!(report.due(soon), Some(t0 + REPORT_INTERVAL));
        let later = t0 + REPORT_INTERVAL;
        let rest = Closed {
            clients: 1,
            bytes: 7,
        };
        assert_eq!(report.take(later), Some(rest));
        assert_eq!(report.due(later), None);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        for (bytes, text) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            (65_000, "63.5 KiB"),
            (64 << 20, "64 MiB"),
            (3 << 30, "3 GiB"),
            (5 << 40, "5120 GiB"),
        ] {
            assert_eq!(Size(bytes).to_string(), text);
        }
    }
}
