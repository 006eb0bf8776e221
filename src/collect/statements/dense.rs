//! A compact map keyed by [`Key`], for the statements collector's per-statement state.
//!
//! # Memory per entry
//!
//! Keys and values live in two dense `Vec`s; a separate open-addressing table of `u32`
//! positions finds them. An entry therefore costs `size_of::<Key>()` (24 bytes) plus
//! `size_of::<V>()`, plus 4 bytes for each table slot: at most 7/8 of the slots are used, so
//! between 4.6 and 9.2 bytes per entry, about 8 at 1,000 entries.
//!
//! A `HashMap<Key, V>` (hashbrown) stores the key and value *in* its buckets and doubles its
//! bucket count, so 1,000 entries occupy 2,048 buckets: every entry paid for one empty bucket
//! of `24 + size_of::<V>()` bytes, twice what this map pays. For the same reason the `Vec`s
//! here do not double either: they grow by an eighth, and callers that know how
//! many entries a poll brings reserve exactly that (`reserve_total`).
//!
//! Positions are stable while entries are only inserted (an insert appends); `remove`
//! moves the last entry into the hole, and `retain` compacts in order. Iteration is
//! in position order, which is deterministic (nothing here depends on the order).

use std::hash::{BuildHasher as _, BuildHasherDefault};

use super::delta::{Key, KeyHasher};

/// The table slot marker of "no entry".
const EMPTY: u32 = u32::MAX;
/// The smallest table, in slots.
const MIN_SLOTS: usize = 8;

/// Make room for one more element in `v`, by an eighth of its length rather than doubling
/// (which would leave up to half of a large `Vec` unused). Still amortised O(1) per push.
pub(super) fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(4));
    }
}

/// Give back memory when `v` holds much less than it could: after a view shrank for good.
fn trim<T>(v: &mut Vec<T>) {
    let len = v.len();
    if v.capacity() > len + len / 4 + 16 {
        v.shrink_to(len + len / 8);
    }
}

/// Entries keyed by [`Key`]: dense `Vec`s of keys and values and a table of positions.
#[derive(Debug, Clone)]
pub(super) struct DenseMap<V> {
    keys: Vec<Key>,
    values: Vec<V>,
    /// Open addressing, linear probing, a power of two long; [`EMPTY`] or a position.
    table: Vec<u32>,
}

impl<V> Default for DenseMap<V> {
    fn default() -> Self {
        DenseMap {
            keys: Vec::new(),
            values: Vec::new(),
            table: Vec::new(),
        }
    }
}

fn hash(key: &Key) -> u64 {
    BuildHasherDefault::<KeyHasher>::default().hash_one(key)
}

/// Slots needed for `len` entries at most 7/8 full.
fn slots_for(len: usize) -> usize {
    (len + len / 7 + 1).next_power_of_two().max(MIN_SLOTS)
}

impl<V> DenseMap<V> {
    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Remove every entry, keeping the memory (the same statements usually come back).
    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.values.clear();
        self.table.fill(EMPTY);
    }

    /// Make room for `total` entries in all, exactly: for a poll that knows how many it brings.
    pub(super) fn reserve_total(&mut self, total: usize) {
        let more = total.saturating_sub(self.len());
        self.keys.reserve_exact(more);
        self.values.reserve_exact(more);
        if slots_for(total) > self.table.len() {
            self.rebuild(slots_for(total));
        }
    }

    /// The first slot to probe for `key`.
    fn home(&self, key: &Key) -> usize {
        // The multiply-rotate hash mixes best into its high bits.
        let bits = self.table.len().trailing_zeros();
        (hash(key) >> (64 - bits)) as usize
    }

    /// The slot holding `key`'s position, or the empty slot where it would go.
    fn find(&self, key: &Key) -> (usize, Option<usize>) {
        let mask = self.table.len() - 1;
        let mut slot = self.home(key);
        loop {
            match self.table[slot] {
                EMPTY => return (slot, None),
                pos if self.keys[pos as usize] == *key => return (slot, Some(pos as usize)),
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// The position of `key`.
    fn position(&self, key: &Key) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        self.find(key).1
    }

    /// Refill a table of `slots` slots from the keys.
    fn rebuild(&mut self, slots: usize) {
        self.table.clear();
        self.table.resize(slots, EMPTY);
        self.table.shrink_to(slots);
        for pos in 0..self.keys.len() {
            let (slot, _) = self.find(&self.keys[pos]);
            self.table[slot] = pos as u32;
        }
    }

    /// The value of `key`.
    pub(super) fn get(&self, key: &Key) -> Option<&V> {
        self.position(key).map(|p| &self.values[p])
    }

    /// The value of `key`, to change.
    pub(super) fn get_mut(&mut self, key: &Key) -> Option<&mut V> {
        self.position(key).map(|p| &mut self.values[p])
    }

    /// Whether `key` has an entry.
    pub(super) fn contains_key(&self, key: &Key) -> bool {
        self.position(key).is_some()
    }

    /// Set `key`'s value; return its position and the value it replaces.
    fn insert_full(&mut self, key: Key, value: V) -> (usize, Option<V>) {
        if self.len() + 1 > self.table.len() / 8 * 7 {
            self.rebuild(slots_for(self.len() + 1).max(self.table.len() * 2));
        }
        match self.find(&key) {
            (_, Some(pos)) => (pos, Some(std::mem::replace(&mut self.values[pos], value))),
            (slot, None) => {
                let pos = self.keys.len();
                assert!(pos < EMPTY as usize, "more entries than a u32 counts");
                grow(&mut self.keys);
                grow(&mut self.values);
                self.keys.push(key);
                self.values.push(value);
                self.table[slot] = pos as u32;
                (pos, None)
            }
        }
    }

    /// Set `key`'s value; return the value it replaces.
    pub(super) fn insert(&mut self, key: Key, value: V) -> Option<V> {
        self.insert_full(key, value).1
    }

    /// `key`'s value, inserted from `make` if it has none.
    pub(super) fn get_or_insert_with(&mut self, key: Key, make: impl FnOnce() -> V) -> &mut V {
        let pos = match self.position(&key) {
            Some(pos) => pos,
            None => self.insert_full(key, make()).0,
        };
        &mut self.values[pos]
    }

    /// Remove `key`'s entry and return its value; the last entry takes its position.
    pub(super) fn remove(&mut self, key: &Key) -> Option<V> {
        let pos = self.position(key)?;
        Some(self.remove_at(pos))
    }

    fn remove_at(&mut self, pos: usize) -> V {
        let slot = self.find(&self.keys[pos]).0;
        self.unlink(slot);
        let last = self.keys.len() - 1;
        if pos != last {
            let moved = self.find(&self.keys[last]).0;
            self.table[moved] = pos as u32;
        }
        self.keys.swap_remove(pos);
        self.values.swap_remove(pos)
    }

    /// Empty `slot` and move later slots of its probe run back (backward-shift deletion), so
    /// lookups need no tombstones.
    fn unlink(&mut self, mut hole: usize) {
        let mask = self.table.len() - 1;
        let mut slot = hole;
        loop {
            slot = (slot + 1) & mask;
            let pos = self.table[slot];
            if pos == EMPTY {
                break;
            }
            let home = self.home(&self.keys[pos as usize]);
            // Move it into the hole unless its home lies in (hole, slot], cyclically.
            if (slot.wrapping_sub(home) & mask) >= (slot.wrapping_sub(hole) & mask) {
                self.table[hole] = pos;
                hole = slot;
            }
        }
        self.table[hole] = EMPTY;
    }

    /// Keep the entries for which `keep` is true; give back memory if many went.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Key, &mut V) -> bool) {
        let mut gone = Vec::new();
        for pos in 0..self.len() {
            if !keep(&self.keys[pos], &mut self.values[pos]) {
                gone.push(pos);
            }
        }
        if gone.is_empty() {
            return;
        }
        if gone.len() <= self.len() / 16 {
            // A few, as in most polls: remove each, the last first, so that the entry moved
            // into a hole is one that stays. Cheaper than refilling the whole table.
            for pos in gone.into_iter().rev() {
                self.remove_at(pos);
            }
        } else {
            let mut gone = gone.into_iter().peekable();
            let mut kept = 0;
            for pos in 0..self.len() {
                if gone.next_if_eq(&pos).is_none() {
                    self.keys.swap(kept, pos);
                    self.values.swap(kept, pos);
                    kept += 1;
                }
            }
            self.keys.truncate(kept);
            self.values.truncate(kept);
            self.rebuild(self.table.len());
        }
        trim(&mut self.keys);
        trim(&mut self.values);
        if self.len() < self.table.len() / 4 && self.table.len() > MIN_SLOTS {
            self.rebuild(slots_for(self.len()));
        }
    }

    /// Every entry, in position order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &V)> {
        self.keys.iter().zip(&self.values)
    }

    /// Every key.
    pub(super) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }

    /// Every value.
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.values.iter()
    }

    /// Every value, to change.
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.values.iter_mut()
    }

    /// Heap bytes held: every allocated element, used or not.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.keys.capacity() * size_of::<Key>()
            + self.values.capacity() * size_of::<V>()
            + self.table.capacity() * size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn key(q: i64) -> Key {
        Key {
            dbid: (q % 5) as u32,
            userid: 10,
            queryid: q.wrapping_mul(0x9e37_79b9),
            toplevel: q % 2 == 0,
        }
    }

    /// A small deterministic generator (xorshift), for an operation mix without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn check(d: &DenseMap<u64>, model: &HashMap<Key, u64>) {
        assert_eq!(d.len(), model.len());
        for (k, v) in model {
            assert_eq!(d.get(k), Some(v), "{k:?}");
        }
        assert_eq!(d.iter().count(), model.len());
    }

    #[test]
    fn behaves_as_a_hash_map_under_a_random_mix_of_operations() {
        let mut d = DenseMap::default();
        let mut model = HashMap::new();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for step in 0..60_000u64 {
            let k = key((rng.next() % 3000) as i64);
            match rng.next() % 10 {
                0..=4 => assert_eq!(d.insert(k, step), model.insert(k, step)),
                5..=6 => assert_eq!(d.remove(&k), model.remove(&k)),
                7 => {
                    *d.get_or_insert_with(k, || 0) += 1;
                    *model.entry(k).or_insert(0) += 1;
                }
                8 => assert_eq!(d.get(&k), model.get(&k)),
                _ => {}
            }
            if step % 500 == 0 {
                let cut = rng.next() % 4;
                d.retain(|k, v| v.wrapping_add(k.queryid as u64) % 4 != cut);
                model.retain(|k, v| v.wrapping_add(k.queryid as u64) % 4 != cut);
            }
            // Few removed (one in 64): the other way retain works.
            if step % 700 == 350 {
                d.retain(|k, v| v.wrapping_add(k.queryid as u64) % 64 != 0);
                model.retain(|k, v| v.wrapping_add(k.queryid as u64) % 64 != 0);
            }
            if step % 1000 == 0 {
                check(&d, &model);
            }
        }
        check(&d, &model);
        d.clear();
        assert!(d.is_empty() && d.get(&key(1)).is_none());
    }

    #[test]
    fn sized_exactly_not_doubled() {
        let mut d = DenseMap::default();
        d.reserve_total(1000);
        for q in 0..1000 {
            d.insert(key(q), 0u64);
        }
        // 1,000 × (24 + 8) bytes of entries and 2,048 slots of 4 bytes.
        assert_eq!(d.heap_bytes(), 1000 * 32 + 2048 * 4);
        // Grown one at a time, the Vecs end at most an eighth (plus 4) over.
        let mut d = DenseMap::default();
        for q in 0..1000 {
            d.insert(key(q), 0u64);
        }
        assert!(
            d.keys.capacity() <= 1000 + 1000 / 8 + 4,
            "{}",
            d.keys.capacity()
        );
        // A view that shrank for good gives its memory back.
        d.retain(|k, _| k.dbid == 0);
        assert!(d.heap_bytes() < 200 * 40 + 512 * 4, "{}", d.heap_bytes());
    }
}
