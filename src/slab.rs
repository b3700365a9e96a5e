//! A table of connections indexed by small integers that double as tokens.
//!
//! A freed slot is not handed out again until [`Slab::recycle`], which the
//! loop calls between batches of events. An event still queued for a closed
//! client therefore finds an empty slot, never a stranger that took its place.

/// Slots of `T` with a free list.
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    released: Vec<usize>,
    len: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            released: Vec::new(),
            len: 0,
        }
    }

    /// The number of occupied slots.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index `insert` will use next.
    pub(crate) fn vacant_key(&self) -> usize {
        self.free.last().copied().unwrap_or(self.slots.len())
    }

    pub(crate) fn insert(&mut self, value: T) -> usize {
        let key = match self.free.pop() {
            Some(key) => key,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[key] = Some(value);
        self.len += 1;
        key
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.slots.get_mut(key).and_then(Option::as_mut)
    }

    /// Empties a slot; it becomes reusable after the next [`Slab::recycle`].
    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let value = self.slots.get_mut(key)?.take()?;
        self.released.push(key);
        self.len -= 1;
        Some(value)
    }

    /// Makes the slots removed since the last call available again.
    pub(crate) fn recycle(&mut self) {
        self.free.append(&mut self.released);
    }

    /// The keys of occupied slots.
    pub(crate) fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(key, slot)| slot.as_ref().map(|_| key))
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
        assert_eq!(slab.keys().collect::<Vec<_>>(), vec![a, b, c]);
        assert_eq!(slab.get_mut(b), Some(&mut 'b'));
        assert_eq!(slab.get_mut(99), None);
    }
}
