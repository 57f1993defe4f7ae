//! The global budget for request bodies held in memory, counted in KiB permits of a semaphore.
//!
//! Each request reserves its body (declared length, else the cap) before reading it, and its
//! decompressed reports before they wait for the store. A reservation that cannot be had before
//! its deadline is answered 503 with `Retry-After`: under a flood the collector slows clients
//! down instead of running out of memory.

use crate::api::ApiError;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget.
#[derive(Debug, Clone)]
pub(crate) struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_kib: u32,
}

impl MemoryBudget {
    /// A budget of `bytes`.
    pub(crate) fn new(bytes: u64) -> Self {
        let total_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        Self { permits: Arc::new(Semaphore::new(total_kib as usize)), total_kib }
    }

    /// Reserves `bytes` (at most the whole budget), waiting until `deadline`.
    pub(crate) async fn reserve(
        &self,
        bytes: u64,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, ApiError> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, self.total_kib);
        let wait = self.permits.clone().acquire_many_owned(kib);
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), wait).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::busy()),
        }
    }
}
