//! The one hash map of the core: for lookups, never for walking in order.
//!
//! A hash map iterates in an order that depends on its hasher and its history; where that
//! order reaches an output (a message, a transmit, a decision), a run stops being a
//! function of its inputs and the simulator cannot replay it. So the workspace's clippy
//! configuration bans the hash maps of std and hashbrown outright (`disallowed-types`), and
//! this wrapper is the only one allowed: it hashes with a fixed seed (no OS randomness) and
//! has no iteration but [`LookupMap::iter_unordered`], whose name says what its callers
//! must respect (order-free uses: a sum, `any`, a minimum, or a collection sorted after).
//! Anything walked in order is a `BTreeMap`.

use std::borrow::Borrow;
use std::hash::Hash;

#[allow(clippy::disallowed_types)] // the one place that names it
type Inner<K, V> = hashbrown::HashMap<K, V, foldhash::fast::FixedState>;

/// A map for lookups, hashed with a fixed seed (see the module docs).
#[derive(Clone)]
pub struct LookupMap<K, V>(Inner<K, V>);

impl<K, V> Default for LookupMap<K, V> {
    fn default() -> Self {
        LookupMap(Inner::default())
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for LookupMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The entries are not listed: their order would differ from run to run of a
        // program that printed them (and nothing must depend on it).
        f.debug_struct("LookupMap")
            .field("len", &self.0.len())
            .finish()
    }
}

impl<K: Hash + Eq, V> LookupMap<K, V> {
    /// The value under `k`.
    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.get(k)
    }

    /// The value under `k`, to change.
    pub fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.get_mut(k)
    }

    /// Whether `k` has a value.
    pub fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.contains_key(k)
    }

    /// Sets the value under `k`; returns the one it replaced.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.0.insert(k, v)
    }

    /// Removes the value under `k`.
    pub fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.remove(k)
    }

    /// The value under `k`, made by `new` if there is none.
    pub fn get_or_insert_with(&mut self, k: K, new: impl FnOnce() -> V) -> &mut V {
        self.0.entry(k).or_insert_with(new)
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every entry, in an order that is arbitrary and may change from run to run: only for
    /// uses that do not depend on it (a sum, `any`, a minimum, a collection sorted after).
    pub fn iter_unordered(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter()
    }

    /// Every key, sorted: for work whose outcome must not hang on the map's order.
    pub fn keys_sorted(&self) -> Vec<K>
    where
        K: Ord + Copy,
    {
        let mut keys: Vec<K> = self.0.keys().copied().collect();
        keys.sort_unstable();
        keys
    }
}
