//! Memory budgets of responses: a `MemoryLease` holds bytes of one or more budgets (the
//! connection's response budget, the shard's request-memory budget) until the response
//! it accounts for is written, and gives them back on drop.
//!
//! Runs on: any shard (the semaphores are the shard's and its connections' own).

use std::rc::Rc;

use glommio::sync::Semaphore;

/// Bytes taken from budgets (glommio semaphores counting bytes), returned on drop.
#[derive(Default)]
pub struct MemoryLease {
    parts: Vec<(Rc<Semaphore>, u64)>,
}

impl MemoryLease {
    /// A lease of nothing.
    pub fn none() -> MemoryLease {
        MemoryLease::default()
    }

    /// Waits until `budget` has `bytes` and takes them; None if the budget is closed
    /// (shutdown).
    pub async fn wait(&mut self, budget: &Rc<Semaphore>, bytes: u64) -> Option<()> {
        if bytes > 0 {
            budget.acquire(bytes).await.ok()?;
            self.parts.push((budget.clone(), bytes));
        }
        Some(())
    }

    /// Takes up to `bytes` of what `budget` has right now, without waiting; returns how
    /// many it took.
    pub fn take_available(&mut self, budget: &Rc<Semaphore>, bytes: u64) -> u64 {
        let n = bytes.min(budget.available());
        if n > 0 && budget.try_acquire(n).unwrap_or(false) {
            self.parts.push((budget.clone(), n));
            return n;
        }
        0
    }

    /// Gives back whatever each budget holds beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: u64) {
        for (sem, held) in &mut self.parts {
            if *held > bytes {
                sem.signal(*held - bytes);
                *held = bytes;
            }
        }
    }
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        for (sem, held) in self.parts.drain(..) {
            sem.signal(held);
        }
    }
}
