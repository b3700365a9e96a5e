//! The deadline queue: per-connection deadlines in coarse ticks, kept out
//! of the connection's slot so that a connection without one costs
//! nothing. It is the mechanism only: which deadlines a connection has,
//! and what happens when one passes, is the policy in [`crate::timeouts`].
//!
//! Time is counted in ticks of [`TICK`] from an origin. A deadline is
//! rounded up to its tick, and a tick is due once the clock reaches its
//! start, so a deadline is reported never before it passes and at most one
//! tick after (plus however late the loop gets to it). The queue is a map
//! from tick to the keys armed for it: connections that time out within
//! one tick share a bucket, so an insert is O(log buckets) plus a push, and
//! expiry takes whole buckets, O(expired).
//!
//! Each key may hold one deadline of each [`Kind`], and has at most one
//! live queue entry, at `armed`, the tick of its earliest. Re-arming is
//! lazy, as tokio's wheel and HAProxy's queue do it: moving a deadline
//! later is a store, and the entry is moved when it surfaces; moving one
//! earlier pushes a new entry and leaves the old one stale, to be dropped
//! when it surfaces (it no longer equals `armed`). Stale entries are
//! bounded: when they could outnumber the table, the queue is rebuilt from
//! it, which the pushes since the last rebuild pay for.
//!
//! The side table is allocated only once a key is given a deadline: a
//! process that sets none allocates nothing here. Guarantees, checked
//! against a model in the tests: every deadline set and still standing is
//! reported exactly once, never early, at most one tick late; a cleared or
//! replaced one is never reported; and the queue never sleeps past a due
//! deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The granularity of every deadline: timers wake the loop at most once
/// per tick, and fire at most one tick late.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// No deadline (or one too far to count: 2^32 ticks is over 13 years).
pub(crate) const NONE: u32 = u32::MAX;
/// Stale entries allowed beyond one per table slot before a rebuild.
const STALE_SLACK: usize = 64;

/// What a deadline is for. A key has at most one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// No bytes read from the client for too long.
    Idle = 0,
    /// Output pending and none of it taken for too long.
    Send = 1,
    /// The protocol's own ([`crate::Protocol::deadline`]).
    Protocol = 2,
}

const KINDS: [Kind; 3] = [Kind::Idle, Kind::Send, Kind::Protocol];

/// One key's deadlines, 24 bytes.
#[derive(Debug, Clone, Copy)]
struct KeyDeadlines {
    /// Per kind, the tick it is due, or [`NONE`].
    due: [u32; 3],
    /// The tick of the key's live queue entry, or [`NONE`].
    armed: u32,
    /// The tick of the protocol deadline last reported, or [`NONE`]: set
    /// again unchanged, it is not reported again. It and the protocol's
    /// `due` are never both set.
    spent: u32,
    /// Where in its tick the protocol deadline, due or spent, falls: with
    /// the tick, the exact instant, so that one moved within its tick
    /// after it was reported counts as moved.
    protocol_nanos: u32,
}

impl KeyDeadlines {
    const EMPTY: KeyDeadlines = KeyDeadlines {
        due: [NONE; 3],
        armed: NONE,
        spent: NONE,
        protocol_nanos: 0,
    };

    fn earliest(&self) -> u32 {
        self.due.into_iter().min().unwrap_or(NONE)
    }
}

/// The deadlines of every key, and the queue that orders them.
pub(crate) struct DeadlineQueue {
    origin: Instant,
    /// Tick -> keys with an entry for it (live or stale).
    queue: BTreeMap<u32, Vec<u32>>,
    /// Entries in `queue`, live and stale.
    entries: usize,
    /// Indexed by key; grown on a key's first deadline.
    keys: Vec<KeyDeadlines>,
    /// The queue's first tick, or [`NONE`], and when it starts.
    first: u32,
    next: Option<Instant>,
}

impl DeadlineQueue {
    /// [`TICK`] in nanoseconds.
    pub(crate) const TICK_NANOS: u64 = TICK.as_nanos() as u64;

    pub(crate) fn new(origin: Instant) -> DeadlineQueue {
        DeadlineQueue {
            origin,
            queue: BTreeMap::new(),
            entries: 0,
            keys: Vec::new(),
            first: NONE,
            next: None,
        }
    }

    /// The tick `at` falls in, rounded up (the first tick whose start is
    /// not before `at`), and its nanoseconds past a tick start, which
    /// together tell instants apart (all those before the origin are one:
    /// it is the server's start).
    fn exact(&self, at: Instant) -> (u32, u32) {
        let nanos = self.nanos(at);
        let tick = u32::try_from(nanos.div_ceil(Self::TICK_NANOS)).unwrap_or(NONE);
        // Below TICK's 10^8 ns, so it fits.
        (tick, (nanos % Self::TICK_NANOS) as u32)
    }

    /// Nanoseconds from the origin to `at` (0 before it). In 64 bits, which
    /// hold 584 years, so that the division by the tick is a multiply.
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()))
    }

    /// The tick a deadline `delay` nanoseconds after `nanos` (both from
    /// [`DeadlineQueue::nanos`]) falls in, rounded up, or [`NONE`] for one
    /// too far to count: what [`DeadlineQueue::set_tick`] takes.
    #[inline]
    pub(crate) fn tick_after(nanos: u64, delay: u64) -> u32 {
        nanos
            .checked_add(delay)
            .and_then(|at| u32::try_from(at.div_ceil(Self::TICK_NANOS)).ok())
            .unwrap_or(NONE)
    }

    /// Where ticks are counted from: the server's start.
    pub(crate) fn origin(&self) -> Instant {
        self.origin
    }

    /// `delay` in nanoseconds, as [`DeadlineQueue::tick_after`] takes it.
    pub(crate) fn delay_nanos(delay: Duration) -> u64 {
        u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The last tick whose start `now` has reached.
    fn now_tick(&self, now: Instant) -> u32 {
        u32::try_from(self.nanos(now) / Self::TICK_NANOS)
            .unwrap_or(NONE - 1)
            .min(NONE - 1)
    }

    fn start_of(&self, tick: u32) -> Instant {
        self.origin + TICK * tick
    }

    /// Sets, moves or clears (`None`) the protocol's deadline for `key`, to
    /// the nanosecond: one reported already is not reported again unless it
    /// moved.
    #[inline]
    pub(crate) fn set_protocol(&mut self, key: usize, at: Option<Instant>) {
        if at.is_none() {
            // The common case for a protocol with no deadline: nothing to
            // clear, and nothing allocated to find that out.
            let Some(key_deadlines) = self.keys.get(key) else {
                return;
            };
            let p = Kind::Protocol as usize;
            if key_deadlines.due[p] == NONE && key_deadlines.spent == NONE {
                return;
            }
        }
        self.set(key, Kind::Protocol, at);
    }

    /// Sets, moves or clears (`None`) the deadline of `kind` for `key`.
    pub(crate) fn set(&mut self, key: usize, kind: Kind, at: Option<Instant>) {
        let (tick, nanos) = at.map_or((NONE, 0), |at| self.exact(at));
        if kind == Kind::Protocol {
            if key >= self.keys.len() {
                if tick == NONE {
                    return;
                }
                self.grow(key);
            }
            let key_deadlines = &mut self.keys[key];
            let unmoved = tick == key_deadlines.spent && nanos == key_deadlines.protocol_nanos;
            if unmoved && (tick != NONE || key_deadlines.due[Kind::Protocol as usize] == NONE) {
                // Reported already and not moved since, or none as before.
                return;
            }
            key_deadlines.spent = NONE;
            key_deadlines.protocol_nanos = nanos;
        }
        self.set_tick(key, kind, tick);
    }

    /// Sets, moves or clears ([`NONE`]) the deadline of `kind` for `key`,
    /// in ticks ([`DeadlineQueue::tick_after`]). Not for the protocol's, which
    /// [`DeadlineQueue::set`] keeps to the nanosecond. Moving one later is
    /// a store.
    #[inline]
    pub(crate) fn set_tick(&mut self, key: usize, kind: Kind, tick: u32) {
        if key >= self.keys.len() {
            if tick == NONE {
                return;
            }
            self.grow(key);
        }
        let key_deadlines = &mut self.keys[key];
        key_deadlines.due[kind as usize] = tick;
        // The live entry is never later than any deadline of its key, so
        // only one earlier than it needs a new entry; a later one, or none,
        // leaves the entry where it is, to be fixed when it surfaces.
        if tick < key_deadlines.armed {
            key_deadlines.armed = tick;
            self.push(tick, key);
        }
    }

    /// Makes room for `key` in the side table.
    #[cold]
    fn grow(&mut self, key: usize) {
        self.keys.resize(key + 1, KeyDeadlines::EMPTY);
    }

    /// Whether `key` ever had a deadline: one that never did has none to
    /// clear.
    #[inline]
    pub(crate) fn holds(&self, key: usize) -> bool {
        key < self.keys.len()
    }

    /// Whether `key` has a deadline of `kind`.
    pub(crate) fn is_set(&self, key: usize, kind: Kind) -> bool {
        self.keys
            .get(key)
            .is_some_and(|k| k.due[kind as usize] != NONE)
    }

    /// The deadline of `kind` for `key`, if it has one: the start of its
    /// tick.
    #[cfg(test)]
    fn get(&self, key: usize, kind: Kind) -> Option<Instant> {
        let tick = self.keys.get(key)?.due[kind as usize];
        (tick != NONE).then(|| self.start_of(tick))
    }

    /// Clears every deadline of `key`: its connection is gone, and the
    /// next one in its slot starts with none.
    pub(crate) fn clear(&mut self, key: usize) {
        if let Some(key_deadlines) = self.keys.get_mut(key) {
            *key_deadlines = KeyDeadlines::EMPTY;
        }
    }

    /// When the earliest queue entry is due: the loop sleeps until then.
    /// An entry may be stale, so this may wake the loop for nothing, once
    /// per stale entry at most; it is never later than a live deadline.
    /// Kept up to date as the queue's head changes, for the loop asks on
    /// every wakeup.
    #[inline]
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.next
    }

    /// The queue's head changed: when it is due, again.
    fn refresh_next(&mut self) {
        self.first = self.queue.first_key_value().map_or(NONE, |(&tick, _)| tick);
        self.next = (self.first != NONE).then(|| self.start_of(self.first));
    }

    /// Takes every deadline due by `now`, appending `(key, kind)` to
    /// `fired` once per deadline, and re-arms each key for its earliest
    /// deadline left. A reported deadline is cleared.
    pub(crate) fn expire(&mut self, now: Instant, fired: &mut Vec<(usize, Kind)>) {
        let now_tick = self.now_tick(now);
        while let Some(bucket) = self.queue.first_entry() {
            let tick = *bucket.key();
            if tick > now_tick {
                break;
            }
            let keys = bucket.remove();
            self.entries -= keys.len();
            self.first = NONE;
            for key in keys {
                let key = key as usize;
                let key_deadlines = &mut self.keys[key];
                if key_deadlines.armed != tick {
                    continue;
                }
                for kind in KINDS {
                    let due = &mut key_deadlines.due[kind as usize];
                    if *due <= now_tick {
                        if kind == Kind::Protocol {
                            key_deadlines.spent = *due;
                        }
                        *due = NONE;
                        fired.push((key, kind));
                    }
                }
                let earliest = key_deadlines.earliest();
                key_deadlines.armed = earliest;
                if earliest != NONE {
                    self.push(earliest, key);
                }
            }
        }
        self.refresh_next();
    }

    #[inline(never)]
    fn push(&mut self, tick: u32, key: usize) {
        self.queue.entry(tick).or_default().push(key as u32);
        self.entries += 1;
        if self.entries > 2 * self.keys.len() + STALE_SLACK {
            self.rebuild();
        } else if tick < self.first {
            self.first = tick;
            self.next = Some(self.start_of(tick));
        }
    }

    /// Drops every stale entry: the queue again holds one entry per armed
    /// key. It costs O(table), paid for by the more than table-many pushes
    /// that made the stale entries since the last rebuild.
    fn rebuild(&mut self) {
        self.queue.clear();
        self.entries = 0;
        for (key, key_deadlines) in self.keys.iter().enumerate() {
            if key_deadlines.armed != NONE {
                self.queue
                    .entry(key_deadlines.armed)
                    .or_default()
                    .push(key as u32);
                self.entries += 1;
            }
        }
        self.refresh_next();
    }

    /// Queue entries, live and stale.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;

    use super::*;
    use crate::test_rng::Rng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn expire(d: &mut DeadlineQueue, now: Instant) -> Vec<(usize, Kind)> {
        let mut fired = Vec::new();
        d.expire(now, &mut fired);
        fired.sort();
        fired
    }

    #[test]
    fn nothing_set_allocates_nothing() {
        let t0 = Instant::now();
        let mut d = DeadlineQueue::new(t0);
        for key in 0..1000 {
            d.set(key, Kind::Protocol, None);
            d.set(key, Kind::Idle, None);
            d.clear(key);
        }
        assert_eq!(d.keys.capacity(), 0);
        assert_eq!(d.next_due(), None);
        assert!(expire(&mut d, t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn a_deadline_fires_in_its_tick_never_before() {
        let t0 = Instant::now();
        let mut d = DeadlineQueue::new(t0);
        d.set(3, Kind::Idle, Some(t0 + ms(250)));
        // Rounded up to the start of tick 3.
        assert_eq!(d.next_due(), Some(t0 + ms(300)));
        assert_eq!(d.get(3, Kind::Idle), Some(t0 + ms(300)));
        assert!(expire(&mut d, t0 + ms(299)).is_empty());
        assert_eq!(expire(&mut d, t0 + ms(300)), [(3, Kind::Idle)]);
        assert_eq!(d.get(3, Kind::Idle), None);
        assert!(expire(&mut d, t0 + ms(10_000)).is_empty());
        assert_eq!(d.next_due(), None);
    }

    #[test]
    fn moving_later_is_a_store_and_the_entry_follows_when_it_surfaces() {
        let t0 = Instant::now();
        let mut d = DeadlineQueue::new(t0);
        d.set(0, Kind::Idle, Some(t0 + ms(100)));
        for step in 2..50 {
            d.set(0, Kind::Idle, Some(t0 + ms(100 * step)));
        }
        assert_eq!(d.queued(), 1, "a later deadline pushes nothing");
        // The old entry surfaces, fires nothing, and moves.
        assert!(expire(&mut d, t0 + ms(100)).is_empty());
        assert_eq!(d.next_due(), Some(t0 + ms(4900)));
        assert_eq!(expire(&mut d, t0 + ms(4900)), [(0, Kind::Idle)]);
    }

    #[test]
    fn moving_earlier_leaves_a_stale_entry_that_reports_nothing() {
        let t0 = Instant::now();
        let mut d = DeadlineQueue::new(t0);
        d.set(1, Kind::Protocol, Some(t0 + ms(1000)));
        d.set(1, Kind::Protocol, Some(t0 + ms(200)));
        assert_eq!(d.queued(), 2);
        assert_eq!(expire(&mut d, t0 + ms(200)), [(1, Kind::Protocol)]);
        assert!(expire(&mut d, t0 + ms(1000)).is_empty());
        assert_eq!(d.queued(), 0);
    }

    #[test]
    fn kinds_fire_separately_and_the_key_rearms_for_the_rest() {
        let t0 = Instant::now();
        let mut d = DeadlineQueue::new(t0);
        d.set(7, Kind::Idle, Some(t0 + ms(500)));
        d.set(7, Kind::Send, Some(t0 + ms(200)));
        d.set(7, Kind::Protocol, Some(t0 + ms(200)));
        assert_eq!(
            expire(&mut d, t0 + ms(250)),
            [(7, Kind::Send), (7, Kind::Protocol)]
        );
        assert_eq!(d.next_due(), Some(t0 + ms(500)));
        assert_eq!(expire(&mut d, t0 + ms(500)), [(7, Kind::Idle)]);
    }

    #[test]
    fn a_spent_protocol_deadline_fires_again_only_once_moved() {
        let t0 = Instant::now();
        let mut d = DeadlineQueue::new(t0);
        let at = t0 + ms(100);
        d.set(0, Kind::Protocol, Some(at));
        assert_eq!(expire(&mut d, at), [(0, Kind::Protocol)]);
        // The protocol did not move it: read again, it is not re-armed.
        d.set(0, Kind::Protocol, Some(at));
        assert!(expire(&mut d, at + ms(500)).is_empty());
        // Moved (or cleared and set again), it counts.
        d.set(0, Kind::Protocol, Some(at + ms(700)));
        assert_eq!(expire(&mut d, at + ms(700)), [(0, Kind::Protocol)]);
        d.set(0, Kind::Protocol, None);
        d.set(0, Kind::Protocol, Some(at + ms(700)));
        assert_eq!(expire(&mut d, at + ms(800)), [(0, Kind::Protocol)]);
    }

    /// Found by the connection fuzzer: a protocol whose `on_deadline`
    /// moved its deadline by 1 ms, within the tick it had fired in, was
    /// never told of the new one, since only ticks were compared.
    #[test]
    fn a_spent_protocol_deadline_moved_within_its_tick_fires_again() {
        let t0 = Instant::now();
        let mut d = DeadlineQueue::new(t0);
        let at = t0 + ms(250);
        d.set(0, Kind::Protocol, Some(at));
        assert_eq!(expire(&mut d, t0 + ms(300)), [(0, Kind::Protocol)]);
        // Moved 1 ms later, or earlier, still in tick 3: due at once.
        d.set(0, Kind::Protocol, Some(at + ms(1)));
        assert_eq!(expire(&mut d, t0 + ms(300)), [(0, Kind::Protocol)]);
        d.set(0, Kind::Protocol, Some(at - ms(30)));
        assert_eq!(expire(&mut d, t0 + ms(300)), [(0, Kind::Protocol)]);
        // Left where it was, it is not.
        d.set(0, Kind::Protocol, Some(at - ms(30)));
        assert!(expire(&mut d, t0 + ms(1000)).is_empty());
    }

    #[test]
    fn a_cleared_key_reused_at_the_same_tick_fires_once() {
        let t0 = Instant::now();
        let mut d = DeadlineQueue::new(t0);
        d.set(2, Kind::Idle, Some(t0 + ms(300)));
        d.clear(2);
        // A new connection in the same slot, due in the same tick.
        d.set(2, Kind::Send, Some(t0 + ms(300)));
        assert_eq!(d.queued(), 2);
        assert_eq!(expire(&mut d, t0 + ms(300)), [(2, Kind::Send)]);
    }

    #[test]
    fn a_deadline_beyond_the_tick_range_is_never_due() {
        let t0 = Instant::now();
        let mut d = DeadlineQueue::new(t0);
        d.set(0, Kind::Idle, Some(t0 + TICK * u32::MAX));
        assert_eq!(d.next_due(), None);
        assert_eq!(d.get(0, Kind::Idle), None);
        // One in the past is due at once.
        let mut d = DeadlineQueue::new(t0 + ms(1000));
        d.set(0, Kind::Idle, Some(t0));
        assert_eq!(expire(&mut d, t0 + ms(1000)), [(0, Kind::Idle)]);
    }

    /// The model: each key's deadlines as the instants their ticks start,
    /// with the protocol's "reported and not moved since" rule on exact
    /// instants; due once the clock reaches the start of the deadline's
    /// tick.
    #[derive(Default)]
    struct Model {
        due: Map<(usize, Kind), Instant>,
        /// The protocol deadline as set, and as last reported.
        exact: Map<usize, Instant>,
        spent: Map<usize, Instant>,
    }

    /// The start of the tick `at` falls in, rounded up: at most one tick
    /// after `at`, never before it.
    fn tick_start(t0: Instant, at: Instant) -> Instant {
        let nanos = at.saturating_duration_since(t0).as_nanos();
        let start = t0 + TICK * nanos.div_ceil(TICK.as_nanos()) as u32;
        assert!(start >= at.max(t0) && start - at.max(t0) < TICK);
        start
    }

    #[test]
    fn random_sequences_agree_with_the_model() {
        const KEYS: u64 = 40;
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let t0 = Instant::now();
            let mut d = DeadlineQueue::new(t0);
            let mut model = Model::default();
            let mut now = t0;
            for _ in 0..3000 {
                let key = rng.below(KEYS as usize);
                let kind = KINDS[rng.below(3)];
                match rng.below(10) {
                    // Set or move, earlier or later, sometimes into the past.
                    0..=4 => {
                        let at = (now + ms(rng.below(3000) as u64))
                            .checked_sub(ms(200))
                            .unwrap_or(t0);
                        d.set(key, kind, Some(at));
                        if kind == Kind::Protocol {
                            if model.spent.get(&key) == Some(&at) {
                                continue;
                            }
                            model.spent.remove(&key);
                            model.exact.insert(key, at);
                        }
                        // The model keeps ticks as the instants they start.
                        let at = tick_start(t0, at);
                        model.due.insert((key, kind), at);
                    }
                    5 => {
                        d.set(key, kind, None);
                        model.due.remove(&(key, kind));
                        if kind == Kind::Protocol {
                            model.spent.remove(&key);
                        }
                    }
                    6 => {
                        d.clear(key);
                        model.due.retain(|&(k, _), _| k != key);
                        model.spent.remove(&key);
                    }
                    _ => {
                        // The loop sleeps until next_due or less, never
                        // past a due deadline.
                        let earliest = model.due.values().min().copied();
                        if let Some(earliest) = earliest {
                            let next = d.next_due().expect("a deadline is set");
                            assert!(next <= earliest.max(now), "sleeps past a deadline");
                        }
                        now += ms(rng.below(250) as u64);
                        if rng.below(4) == 0 {
                            if let Some(next) = d.next_due() {
                                now = now.max(next);
                            }
                        }
                        let got = expire(&mut d, now);
                        let mut want: Vec<(usize, Kind)> = model
                            .due
                            .iter()
                            .filter(|(_, at)| **at <= now)
                            .map(|(&k, _)| k)
                            .collect();
                        want.sort();
                        assert_eq!(got, want, "seed {seed}");
                        for &(key, kind) in &got {
                            let at = model.due.remove(&(key, kind)).unwrap();
                            // Due at the first look at or after the start
                            // of its tick (the equality above says it was
                            // not due at the last one), never before.
                            assert!(at <= now);
                            if kind == Kind::Protocol {
                                model.spent.insert(key, model.exact[&key]);
                            }
                        }
                    }
                }
                assert!(
                    d.queued() <= 2 * d.keys.len() + STALE_SLACK,
                    "stale entries unbounded: {}",
                    d.queued()
                );
            }
        }
    }

    #[test]
    fn stale_entries_stay_bounded_under_repeated_earlier_moves() {
        let t0 = Instant::now();
        let mut d = DeadlineQueue::new(t0);
        for key in 0..10 {
            for step in (1..1000u64).rev() {
                d.set(key, Kind::Protocol, Some(t0 + ms(100 * step)));
            }
        }
        assert!(d.queued() <= 2 * 10 + STALE_SLACK, "{}", d.queued());
        // Each key still fires once, at its last deadline.
        assert_eq!(expire(&mut d, t0 + ms(100)).len(), 10);
        assert!(expire(&mut d, t0 + ms(200_000)).is_empty());
        assert_eq!(d.queued(), 0);
    }
}
