//! The global budget for what requests hold in memory, counted in KiB permits of a semaphore,
//! with a share per client identity.
//!
//! A request reserves its body (declared length, else the cap) before reading it, then what
//! parsing its reports will take (estimated before the parse, [`crate::json_cost`]) while they
//! are parsed and wait for the store; a response reserves its bytes until they are sent. A
//! reservation that cannot be had before its deadline is answered 503 with `Retry-After`:
//! under a flood the collector slows clients down instead of running out of memory.
//!
//! Security: one client identity (a host, an operator) may hold at most
//! [`MemoryBudget::per_client_bytes`], a quarter of the budget. Reservations are made by
//! declared length, before the bytes arrive, so without a share a single compromised host
//! held the whole budget with 64 connections each declaring 8 MiB and trickling one byte
//! every few seconds, and every other host got 503 for as long as it kept doing so.

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
    permit: Option<OwnedSemaphorePermit>,
    kib: u32,
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

    /// Reserves `bytes` for `client` (at most its share), waiting until `deadline` for the
    /// budget. A client over its share is refused at once: what it waits for is its own.
    pub(crate) async fn reserve(
        &self,
        client: &str,
        bytes: u64,
        deadline: Instant,
    ) -> Result<Reservation, ApiError> {
        let kib = kib_of(bytes).clamp(1, self.per_client_kib);
        {
            let mut held = lock(&self.held);
            let mine = held.entry(client.to_string()).or_insert(0);
            if mine.saturating_add(kib) > self.per_client_kib {
                return Err(ApiError::client_busy(self.per_client_bytes()));
            }
            *mine += kib;
        }
        // Counted for the client from here on: the reservation's drop gives it back, whether
        // the budget is had or not.
        let mut reservation =
            Reservation { permit: None, kib, client: client.to_string(), held: Arc::clone(&self.held) };
        let wait = self.permits.clone().acquire_many_owned(kib.min(self.total_kib));
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), wait).await {
            Ok(Ok(permit)) => {
                reservation.permit = Some(permit);
                Ok(reservation)
            }
            _ => Err(ApiError::busy()),
        }
    }
}

impl Reservation {
    /// Adds `other` (the same client's) to this one.
    pub(crate) fn merge(&mut self, mut other: Reservation) {
        debug_assert_eq!(self.client, other.client);
        match (&mut self.permit, other.permit.take()) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (slot @ None, theirs) => *slot = theirs,
            (Some(_), None) => {}
        }
        self.kib = self.kib.saturating_add(std::mem::take(&mut other.kib));
    }

    /// Gives back all but `bytes` (at least 1 KiB stays held).
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        let keep = kib_of(bytes).max(1);
        if keep >= self.kib {
            return;
        }
        let excess = self.kib - keep;
        if let Some(permit) = &mut self.permit {
            drop(permit.split(excess as usize));
        }
        self.kib = keep;
        let mut held = lock(&self.held);
        if let Some(mine) = held.get_mut(&self.client) {
            *mine = mine.saturating_sub(excess);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.kib == 0 {
            return;
        }
        let mut held = lock(&self.held);
        if let Some(mine) = held.get_mut(&self.client) {
            *mine = mine.saturating_sub(self.kib);
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
    /// gives back (drop, shrink) is its own again.
    #[tokio::test]
    async fn one_client_holds_at_most_its_share_and_the_others_keep_the_rest() {
        let budget = MemoryBudget::new(64 << 20, 8 << 20);
        assert_eq!(budget.per_client_bytes(), 16 << 20);
        let first = budget.reserve("host h1", 8 << 20, soon()).await.unwrap();
        let mut second = budget.reserve("host h1", 8 << 20, soon()).await.unwrap();
        let refused = budget.reserve("host h1", 1, soon()).await.unwrap_err();
        assert_eq!(refused.status(), hyper::StatusCode::SERVICE_UNAVAILABLE);
        // The other clients have the rest of the budget (48 MiB), a share each.
        let mut others = Vec::new();
        for other in ["host h2", "host h3", "operator alice"] {
            others.push(budget.reserve(other, 16 << 20, soon()).await.unwrap());
        }
        // The budget is spent: a fifth client waits, then is told the collector is busy.
        assert!(budget.reserve("host h4", 1, soon()).await.is_err());
        // h1 gives back 15 MiB: it may take them again.
        drop(first);
        second.shrink_to(1 << 20);
        let third = budget.reserve("host h1", 15 << 20, soon()).await.unwrap();
        drop((second, third, others));
        assert!(lock(&budget.held).is_empty(), "{:?}", lock(&budget.held));
        assert_eq!(budget.permits.available_permits(), 64 << 10);
    }

    /// A client's share is never below the largest body (a request must hold its own), and
    /// its reservations merged count once.
    #[tokio::test]
    async fn the_share_is_never_below_the_largest_body_and_merged_reservations_count_once() {
        let budget = MemoryBudget::new(16 << 20, 8 << 20);
        assert_eq!(budget.per_client_bytes(), 8 << 20);
        let mut one = budget.reserve("host h1", 4 << 20, soon()).await.unwrap();
        let two = budget.reserve("host h1", 4 << 20, soon()).await.unwrap();
        one.merge(two);
        assert_eq!(lock(&budget.held).get("host h1"), Some(&(8 << 10)));
        assert!(budget.reserve("host h1", 1, soon()).await.is_err());
        drop(one);
        assert!(lock(&budget.held).is_empty());
        assert_eq!(budget.permits.available_permits(), 16 << 10);
    }
}
