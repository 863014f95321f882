//! The read budget: how many sealed bodies are sent at once, in all and per account.
//!
//! A body is read back in bounded chunks ([`vellum_archive::ports::READ_CHUNK`], two in
//! flight), so each read holds about a megabyte however large the body; the budget
//! bounds how many run at once. It is separate from the capture budget: no number of
//! fetches delays or refuses a capture.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::problem::ApiError;

/// Reads in flight, in all and per account.
#[derive(Debug)]
pub(crate) struct ReadBudget {
    all: Arc<Semaphore>,
    per_account: usize,
    running: Arc<Mutex<HashMap<[u8; 16], usize>>>,
}

/// One running read; its share of the budget returns when it is dropped (the body
/// sent, or the reader gone).
#[derive(Debug)]
pub(crate) struct ReadPermit {
    /// The gateway-wide share, once it came.
    all: Option<OwnedSemaphorePermit>,
    account: [u8; 16],
    running: Arc<Mutex<HashMap<[u8; 16], usize>>>,
}

impl Drop for ReadPermit {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.account);
            }
        }
    }
}

impl ReadBudget {
    pub(crate) fn new(all: usize, per_account: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(all.clamp(1, Semaphore::MAX_PERMITS))),
            per_account: per_account.max(1),
            running: Arc::default(),
        }
    }

    /// A share for one more read by `account`: 429 at once when the account runs its
    /// most already, 503 when the gateway's reads stay full for `wait`.
    pub(crate) async fn acquire(&self, account: [u8; 16], wait: Duration) -> Result<ReadPermit, ApiError> {
        let mut permit = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let n = running.entry(account).or_default();
            if *n >= self.per_account {
                return Err(ApiError::TooManyRequests(1));
            }
            *n += 1;
            // From here the count is the permit's: dropped, it is given back.
            ReadPermit {
                all: None,
                account,
                running: self.running.clone(),
            }
        };
        match tokio::time::timeout(wait, self.all.clone().acquire_owned()).await {
            Ok(Ok(all)) => {
                permit.all = Some(all);
                Ok(permit)
            }
            _ => Err(ApiError::Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accounts_are_capped_and_shares_come_back() {
        let budget = ReadBudget::new(3, 2);
        let wait = Duration::from_millis(20);
        let a1 = budget.acquire([1; 16], wait).await.unwrap();
        let _a2 = budget.acquire([1; 16], wait).await.unwrap();
        assert!(matches!(
            budget.acquire([1; 16], wait).await,
            Err(ApiError::TooManyRequests(_))
        ));
        let b1 = budget.acquire([2; 16], wait).await.unwrap();
        // The gateway's three are taken: another account waits, then is told busy, and
        // its count is given back.
        assert!(matches!(budget.acquire([3; 16], wait).await, Err(ApiError::Busy)));
        assert!(!budget.running.lock().unwrap().contains_key(&[3; 16]));
        drop(a1);
        drop(b1);
        let _a3 = budget.acquire([1; 16], wait).await.unwrap();
        let _c1 = budget.acquire([3; 16], wait).await.unwrap();
        assert_eq!(budget.running.lock().unwrap().get(&[1; 16]), Some(&2));
    }
}
