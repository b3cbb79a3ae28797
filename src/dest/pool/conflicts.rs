//! Conflicts between groups: each row change hashed by the values of the
//! destination table's unique keys, and which earlier group a new one must
//! wait for.

use super::*;

/// Hashes of the rows an image touches, for conflicts between groups: per
/// unique index its values (so two groups writing the same key, or the same
/// value of another unique index, conflict). A table without a key, or
/// whose unique values compare under a collation (so different bytes can
/// be the same value), conflicts as a whole.
pub fn row_hashes(dest: &DestTable, columns: &[Option<usize>], image: &Image, out: &mut Vec<u64>) {
    let whole = || {
        let mut h = DefaultHasher::new();
        dest.name.hash(&mut h);
        h.finish()
    };
    if dest.key.is_empty() {
        out.push(whole());
        return;
    }
    for (n, index) in dest.uniques.iter().enumerate() {
        if !dest.compares_bytes(index) {
            out.push(whole());
            continue;
        }
        let mut h = DefaultHasher::new();
        dest.name.hash(&mut h);
        n.hash(&mut h);
        let mut complete = true;
        for &j in index {
            match columns
                .iter()
                .position(|c| *c == Some(j))
                .and_then(|i| image[i].as_ref())
            {
                Some(cell) => hash_cell(cell, &mut h),
                None => complete = false,
            }
        }
        out.push(if complete { h.finish() } else { whole() });
    }
}

fn hash_cell(cell: &Cell, h: &mut DefaultHasher) {
    match cell {
        Cell::Null => 0u8.hash(h),
        Cell::Int(v, _) => (1u8, v).hash(h),
        Cell::UInt(v) => (2u8, v).hash(h),
        Cell::Float(v) => (3u8, v.to_bits()).hash(h),
        Cell::Double(v) => (4u8, v.to_bits()).hash(h),
        Cell::Decimal(d) => (5u8, d).hash(h),
        Cell::Bytes(b) => (6u8, b).hash(h),
    }
}

/// Group numbers, and which group last wrote each row hash, to find what a
/// new group waits for.
#[derive(Default)]
pub struct Conflicts {
    /// The newest group number given out (groups count from 1).
    issued: u64,
    last: HashMap<u64, u64>,
    /// Every group waits for this one (a barrier).
    barrier: u64,
}

impl Conflicts {
    /// The next group's number.
    pub fn issue(&mut self) -> u64 {
        self.issued += 1;
        self.issued
    }

    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// The group that `id`, touching `hashes`, must wait for, and which of
    /// the hashes groups in flight (above `committed`) touch: `None` when
    /// a barrier is in flight. Records the claim.
    pub fn claim(
        &mut self,
        id: u64,
        hashes: &[u64],
        committed: u64,
    ) -> (u64, Option<HashSet<u64>>) {
        if self.last.len() > 1 << 18 {
            self.last.retain(|_, g| *g > committed);
        }
        let mut after = self.barrier;
        let mut busy = HashSet::new();
        for h in hashes {
            match self.last.insert(*h, id) {
                Some(g) if g != id => {
                    after = after.max(g);
                    if g > committed {
                        busy.insert(*h);
                    }
                }
                _ => {}
            }
        }
        (after, (self.barrier <= committed).then_some(busy))
    }

    /// `id` waits for every earlier group, and every later one for it.
    pub fn barrier(&mut self, id: u64) -> u64 {
        self.barrier = id;
        self.last.clear();
        id - 1
    }
}
