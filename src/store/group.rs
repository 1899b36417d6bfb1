//! Group commit: concurrent writes that wait in one queue share a transaction (on SQLite one queue
//! takes admissions, finishes and attempts; on PostgreSQL each kind has its own: `sql::Writes`).
//!
//! A request joins its queue, then waits for its answer or for the leader's lock, whichever
//! comes first. The one that gets the lock takes everything queued and writes it in one
//! transaction, on a task of its own (so a client that goes away while leading cancels nothing),
//! holding the lock until the commit. While one transaction commits the next batch gathers: under
//! load each commit serves many requests, and a lone request waits for nothing. Answers are sent
//! after the commit, so nothing is acknowledged before it is durable.

use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::{SqlStore, StoreError, StoreResult};

/// A write that can share a transaction with the others in its queue.
pub(super) trait Grouped: Send + Sized + 'static {
    type Output: Send + 'static;

    /// Sends the request's result to whoever waits for it.
    fn answer(self, result: StoreResult<Self::Output>);

    /// Every request of `batch`, in order, in one transaction: one output each.
    fn together<'a>(store: &'a SqlStore, batch: &'a [Self]) -> BoxFuture<'a, StoreResult<Vec<Self::Output>>>;
}

/// A queue of grouped writes and its leader's lock.
pub(super) struct GroupCommit<R> {
    queue: std::sync::Mutex<Vec<R>>,
    leader: Arc<tokio::sync::Mutex<()>>,
}

impl<R> Default for GroupCommit<R> {
    fn default() -> Self {
        GroupCommit { queue: std::sync::Mutex::new(Vec::new()), leader: Arc::new(tokio::sync::Mutex::new(())) }
    }
}

impl<R: Grouped> GroupCommit<R> {
    /// Queues the request `make` builds around its answer channel and waits for its result.
    pub(super) async fn submit(
        &self,
        store: &Weak<SqlStore>,
        make: impl FnOnce(oneshot::Sender<StoreResult<R::Output>>) -> R,
    ) -> StoreResult<R::Output> {
        let (answer, mut answered) = oneshot::channel();
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).push(make(answer));
        loop {
            tokio::select! {
                biased;
                result = &mut answered => {
                    return result.unwrap_or_else(|_| {
                        Err(StoreError::Corrupt("a grouped write stopped before answering".into()))
                    });
                }
                lead = self.leader.clone().lock_owned() => {
                    let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
                    // Empty: an earlier leader took this request; its answer comes next.
                    let Some(store) = store.upgrade().filter(|_| !batch.is_empty()) else { continue };
                    tokio::spawn(async move {
                        run(&store, batch).await;
                        drop(lead);
                    });
                }
            }
        }
    }
}

/// Writes `batch` together and answers each request; if the transaction fails, each request is
/// tried alone, so one request's error is never another's.
pub(super) async fn run<R: Grouped>(store: &SqlStore, batch: Vec<R>) {
    match R::together(store, &batch).await {
        Ok(outputs) => {
            for (request, output) in batch.into_iter().zip(outputs) {
                request.answer(Ok(output));
            }
        }
        Err(error) if batch.len() == 1 => {
            if let Some(request) = batch.into_iter().next() {
                request.answer(Err(error));
            }
        }
        Err(_) => {
            for request in batch {
                let alone = R::together(store, std::slice::from_ref(&request)).await;
                request.answer(alone.map(|mut outputs| outputs.remove(0)));
            }
        }
    }
}
