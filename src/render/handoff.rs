//! The render fast path: a generation admitted on a node whose render workers have a free slot is
//! inserted already leased to that node (its first claim, in the admission's own transaction) and
//! handed to the workers in memory, so it costs no claim transaction and no wake-up.
//!
//! The database stays the queue: the handed job's row is committed with its lease before the
//! workers see it, so a crash leaves it to be claimed again when the lease runs out, like any
//! claimed job. Jobs already waiting go first: while a job was left to be claimed (no slot was
//! free), new jobs take the slow path too, until a claim finds less than it had room for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::dispatch::Backends;
use crate::clock::{Millis, now_ms};
use crate::store::{Generation, RenderJob, RenderWork};

/// A job handed to the workers with the slot reserved for it.
pub(super) type Handed = (RenderJob, OwnedSemaphorePermit);

/// This node's render slots, shared by the API (which reserves one for a job it hands over) and
/// the workers (which take one for each job they claim).
pub struct Handoff {
    /// `render.max_jobs_in_flight` permits: a job runs holding one.
    pub(super) slots: Arc<Semaphore>,
    jobs: mpsc::UnboundedSender<Handed>,
    /// Set when a job may be waiting to be claimed; new jobs queue behind it while set.
    waiting: AtomicBool,
    node_id: String,
    lease: Duration,
    backends: Arc<Backends>,
}

/// A slot reserved for one generation, and the lease its row is inserted with. Dropped unused
/// (the admission was refused or failed), it frees the slot.
pub struct Reservation {
    handoff: Arc<Handoff>,
    permit: OwnedSemaphorePermit,
    until: Millis,
}

impl Handoff {
    /// `slots` render slots on node `node_id`, whose jobs are leased for `lease`; the workers read
    /// handed jobs from the receiver.
    pub fn new(
        slots: usize,
        node_id: String,
        lease: Duration,
        backends: Arc<Backends>,
    ) -> (Arc<Handoff>, mpsc::UnboundedReceiver<Handed>) {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let handoff = Handoff {
            slots: Arc::new(Semaphore::new(slots)),
            jobs,
            // Jobs left by an earlier run may be waiting until the first claim says otherwise.
            waiting: AtomicBool::new(true),
            node_id,
            lease,
            backends,
        };
        (Arc::new(handoff), receiver)
    }

    /// A slot for a new generation of `model`, if it can skip the queue: the built-in renderer
    /// runs the model (an inference backend's jobs are claimed against the backend's slots), no
    /// job is known to be waiting, and a slot is free. Finding none free, later jobs queue too.
    pub fn reserve(self: &Arc<Self>, model: &uuid::Uuid) -> Option<Reservation> {
        if self.waiting.load(Ordering::Acquire) || self.backends.served_models().contains(model) {
            return None;
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                Some(Reservation { handoff: self.clone(), permit, until: now_ms() + self.lease.as_millis() as i64 })
            }
            Err(_) => {
                self.waiting.store(true, Ordering::Release);
                None
            }
        }
    }

    /// Called by the workers after each claim: whether it may have left jobs waiting (it filled
    /// every slot it had).
    pub(super) fn claimed(&self, may_have_left_some: bool) {
        self.waiting.store(may_have_left_some, Ordering::Release);
    }
}

impl Reservation {
    /// The lease to insert the generation with: (owner, expiry).
    pub fn lease(&self) -> (&str, Millis) {
        (&self.handoff.node_id, self.until)
    }

    /// Hands the admitted (committed) generation to the workers, with its slot.
    pub fn hand_over(self, generation: Generation) {
        let job = RenderJob { work: RenderWork::Generation(generation), attempt: 1 };
        // Without a receiver the workers have stopped: the row keeps its lease and is claimed
        // again after the restart.
        let _ = self.handoff.jobs.send((job, self.permit));
    }
}
