//! The global budget for what requests hold in memory, counted in KiB permits of a semaphore,
//! with a share per client identity.
//!
//! A request reserves its body (declared length, else the cap) before reading it, then what
//! parsing its reports will take (estimated before the parse, [`crate::json_cost`]) while they
//! are parsed and wait for the store; a response reserves its bytes until they are sent. A
//! reservation that cannot be had before its deadline is answered 503 with `Retry-After`:
//! under a flood the collector slows clients down instead of running out of memory.
//!
//! Security: what one client identity (a host, an operator) holds counts against its share,
//! [`MemoryBudget::per_client_bytes`], a quarter of the budget; a request beyond the share is
//! answered 503 at once. Body reservations are made by declared length, before the bytes
//! arrive, so without a share a single compromised host held the whole budget with 64
//! connections each declaring 8 MiB and trickling one byte every few seconds, and every other
//! host got 503 for as long as it kept doing so. One reservation larger than the share (the
//! parse of a large host's report: its estimate errs high) takes the whole share, so it is
//! that client's only one, and up to the whole budget, for the seconds the parse and the
//! store take.

use crate::api::ApiError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The fraction of the budget one client identity may hold: 1 / this.
const CLIENT_SHARE_DIVISOR: u64 = 4;

/// The budget.
#[derive(Debug, Clone)]
pub(crate) struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_kib: u32,
    per_client_kib: u32,
    /// KiB held per client identity.
    held: Arc<Mutex<HashMap<String, u32>>>,
}

/// Memory held for one client until dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    /// The budget's permits, one per KiB (`None` only while they are awaited).
    permit: Option<OwnedSemaphorePermit>,
    /// KiB counted against the client's share (at most the share).
    counted: u32,
    client: String,
    held: Arc<Mutex<HashMap<String, u32>>>,
}

fn kib_of(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

fn lock(held: &Mutex<HashMap<String, u32>>) -> MutexGuard<'_, HashMap<String, u32>> {
    // Counters only: a panic while holding the lock leaves them as consistent as before it.
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryBudget {
    /// A budget of `bytes`, of which one client may hold a quarter, and never less than
    /// `largest_body` (a request must always be able to hold its own body).
    pub(crate) fn new(bytes: u64, largest_body: u64) -> Self {
        let total_kib = kib_of(bytes).max(1);
        let share = (bytes / CLIENT_SHARE_DIVISOR).max(largest_body).min(bytes);
        let per_client_kib = kib_of(share).clamp(1, total_kib);
        Self {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            per_client_kib,
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The most one client identity may hold at once.
    pub(crate) fn per_client_bytes(&self) -> u64 {
        u64::from(self.per_client_kib) * 1024
    }

    /// The whole budget.
    pub(crate) fn total_bytes(&self) -> u64 {
        u64::from(self.total_kib) * 1024
    }

    /// Reserves `bytes` (at most the whole budget) for `client`, waiting until `deadline` for
    /// the budget. A client whose share is taken is refused at once: what it would wait for
    /// is its own.
    pub(crate) async fn reserve(
        &self,
        client: &str,
        bytes: u64,
        deadline: Instant,
    ) -> Result<Reservation, ApiError> {
        let kib = kib_of(bytes).clamp(1, self.total_kib);
        let counted = kib.min(self.per_client_kib);
        {
            let mut held = lock(&self.held);
            let mine = held.entry(client.to_string()).or_insert(0);
            if mine.saturating_add(counted) > self.per_client_kib {
                return Err(ApiError::client_busy(self.per_client_bytes()));
            }
            *mine += counted;
        }
        // Counted for the client from here on: the reservation's drop gives it back, whether
        // the budget is had or not.
        let mut reservation =
            Reservation { permit: None, counted, client: client.to_string(), held: Arc::clone(&self.held) };
        let wait = self.permits.clone().acquire_many_owned(kib);
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), wait).await {
            Ok(Ok(permit)) => {
                reservation.permit = Some(permit);
                Ok(reservation)
            }
            _ => Err(ApiError::busy()),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.counted == 0 {
            return;
        }
        let mut held = lock(&self.held);
        if let Some(mine) = held.get_mut(&self.client) {
            *mine = mine.saturating_sub(self.counted);
            if *mine == 0 {
                held.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    /// One client cannot hold more than its share, so the others still have the rest; what it
    /// gives back is its own again.
    #[tokio::test]
    async fn one_client_holds_at_most_its_share_and_the_others_keep_the_rest() {
        let budget = MemoryBudget::new(64 << 20, 8 << 20);
        assert_eq!(budget.per_client_bytes(), 16 << 20);
        let first = budget.reserve("host h1", 8 << 20, soon()).await.unwrap();
        let second = budget.reserve("host h1", 8 << 20, soon()).await.unwrap();
        let refused = budget.reserve("host h1", 1, soon()).await.unwrap_err();
        assert_eq!(refused.status(), hyper::StatusCode::SERVICE_UNAVAILABLE);
        // The other clients have the rest of the budget (48 MiB), a share each.
        let mut others = Vec::new();
        for other in ["host h2", "host h3", "operator alice"] {
            others.push(budget.reserve(other, 16 << 20, soon()).await.unwrap());
        }
        // The budget is spent: a fifth client waits, then is told the collector is busy.
        assert!(budget.reserve("host h4", 1, soon()).await.is_err());
        drop(first);
        let third = budget.reserve("host h1", 8 << 20, soon()).await.unwrap();
        drop((second, third, others));
        assert!(lock(&budget.held).is_empty(), "{:?}", lock(&budget.held));
        assert_eq!(budget.permits.available_permits(), 64 << 10);
    }

    /// One reservation larger than the share (a large host's parse) may take up to the whole
    /// budget; it fills the client's share, so it is that client's only one. The share is
    /// never below the largest body.
    #[tokio::test]
    async fn one_reservation_beyond_the_share_fills_it_and_may_use_the_whole_budget() {
        let budget = MemoryBudget::new(64 << 20, 8 << 20);
        let big = budget.reserve("host h1", 100 << 20, soon()).await.unwrap();
        assert_eq!(budget.permits.available_permits(), 0, "capped at the whole budget");
        assert_eq!(lock(&budget.held).get("host h1"), Some(&(16 << 10)));
        assert!(budget.reserve("host h1", 1, soon()).await.is_err());
        drop(big);
        assert!(lock(&budget.held).is_empty());
        assert_eq!(budget.permits.available_permits(), 64 << 10);
        assert_eq!(MemoryBudget::new(16 << 20, 8 << 20).per_client_bytes(), 8 << 20);
    }
}
