//! A table of connections indexed by small integers that double as tokens.
//!
//! A freed slot is not handed out again until [`Slab::recycle`], which the
//! loop calls between batches of events. An event still queued for a closed
//! client therefore finds an empty slot, never a stranger that took its place.
//!
//! Freed slots are chained through the slots themselves (a vacant entry
//! holds the index of the next), so closing clients allocates nothing: a
//! process draining ten thousand clients does not grow while it does.

/// Marks the end of a chain of vacant slots.
const NONE: u32 = u32::MAX;

enum Entry<T> {
    Occupied(T),
    /// The next slot in the same chain, or [`NONE`].
    Vacant(u32),
}

/// Slots of `T` with an intrusive free list.
pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    /// Slots ready for reuse.
    free: u32,
    /// Slots freed since the last recycle, newest first, and the oldest.
    released: u32,
    released_tail: u32,
    len: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab {
            entries: Vec::new(),
            free: NONE,
            released: NONE,
            released_tail: NONE,
            len: 0,
        }
    }

    /// The number of occupied slots.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// One past the highest key ever used: every key is below it.
    pub(crate) fn key_bound(&self) -> usize {
        self.entries.len()
    }

    /// The index `insert` will use next.
    pub(crate) fn vacant_key(&self) -> usize {
        match self.free {
            NONE => self.entries.len(),
            key => key as usize,
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> usize {
        if self.free == NONE {
            assert!(self.entries.len() < NONE as usize, "slab full");
            self.entries.push(Entry::Occupied(value));
            self.len += 1;
            return self.entries.len() - 1;
        }
        let key = self.free as usize;
        match std::mem::replace(&mut self.entries[key], Entry::Occupied(value)) {
            Entry::Vacant(next) => self.free = next,
            Entry::Occupied(_) => unreachable!("the free list named an occupied slot"),
        }
        self.len += 1;
        key
    }

    pub(crate) fn get(&self, key: usize) -> Option<&T> {
        match self.entries.get(key) {
            Some(Entry::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.entries.get_mut(key) {
            Some(Entry::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    /// Empties a slot; it becomes reusable after the next [`Slab::recycle`].
    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let entry = self.entries.get_mut(key)?;
        if let Entry::Vacant(_) = entry {
            return None;
        }
        let Entry::Occupied(value) = std::mem::replace(entry, Entry::Vacant(self.released)) else {
            unreachable!("checked occupied above");
        };
        if self.released == NONE {
            self.released_tail = key as u32;
        }
        self.released = key as u32;
        self.len -= 1;
        Some(value)
    }

    /// Makes the slots removed since the last call available again.
    #[inline]
    pub(crate) fn recycle(&mut self) {
        if self.released != NONE {
            self.recycle_released();
        }
    }

    fn recycle_released(&mut self) {
        self.entries[self.released_tail as usize] = Entry::Vacant(self.free);
        self.free = self.released;
        self.released = NONE;
        self.released_tail = NONE;
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn removed_keys_wait_for_recycle() {
        let mut slab = Slab::new();
        let a = slab.insert('a');
        let b = slab.insert('b');
        assert_eq!(slab.remove(a), Some('a'));
        assert_eq!(slab.remove(a), None);
        let c = slab.insert('c');
        assert_ne!(c, a, "a freed key is reused before recycle");
        slab.recycle();
        assert_eq!(slab.vacant_key(), a);
        assert_eq!(slab.insert('d'), a);
        assert_eq!(slab.len(), 3);
        assert!([a, b, c].iter().all(|&k| slab.get_mut(k).is_some()));
        assert_eq!(slab.get_mut(b), Some(&mut 'b'));
        assert_eq!(slab.get_mut(99), None);
        assert_eq!(slab.key_bound(), 3);
    }

    #[test]
    fn every_freed_slot_comes_back_exactly_once() {
        let mut slab = Slab::new();
        let keys: Vec<usize> = (0..100).map(|i| slab.insert(i)).collect();
        // Free in two batches, recycling between them.
        for &key in keys.iter().filter(|k| *k % 3 == 0) {
            slab.remove(key);
        }
        slab.recycle();
        for &key in keys.iter().filter(|k| *k % 3 == 1) {
            slab.remove(key);
        }
        slab.recycle();
        let freed = keys.iter().filter(|k| *k % 3 != 2).count();
        assert_eq!(slab.len(), 100 - freed);
        let mut reused: Vec<usize> = (0..freed).map(|i| slab.insert(1000 + i)).collect();
        reused.sort_unstable();
        let mut expected: Vec<usize> = keys.iter().copied().filter(|k| k % 3 != 2).collect();
        expected.sort_unstable();
        assert_eq!(reused, expected);
        // Only now does the table grow.
        assert_eq!(slab.insert(7), 100);
    }

    #[test]
    fn an_entry_is_no_larger_than_an_option() {
        use std::mem::size_of;
        assert_eq!(
            size_of::<super::Entry<crate::conn::Conn>>(),
            size_of::<Option<crate::conn::Conn>>()
        );
    }
}
