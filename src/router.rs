//! The router: bounded per-pair channels between shards, carrying calls and their replies.
//!
//! Runs on: every shard. A shard that must act on state another shard owns (a partition, the
//! controller on shard 0, a group coordinator) sends a closure to the owner, which runs it
//! on its own executor against its own `Shard` and sends the result back. No shard ever
//! touches another shard's state or takes a lock: ownership moves, not access.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use crate::shard::Shard;
use crate::sync::{OneshotSender, oneshot};

type AnyBox = Box<dyn Any + Send>;
type LocalFuture = Pin<Box<dyn Future<Output = AnyBox>>>;
/// Work to run on the target shard.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> LocalFuture + Send>;

pub enum Envelope {
    Call { id: u64, job: Job },
    Reply { id: u64, value: AnyBox },
}

/// The not-yet-connected channel ends of one shard, created on the main thread.
pub struct RouterEnds {
    /// senders[t]: this shard -> shard t (None for itself).
    pub senders: Vec<Option<SharedSender<Envelope>>>,
    /// receivers[t]: shard t -> this shard.
    pub receivers: Vec<Option<SharedReceiver<Envelope>>>,
}

/// Builds the full mesh of per-pair bounded channels for `n` shards.
pub fn mesh(n: usize, capacity: usize) -> Vec<RouterEnds> {
    let mut ends: Vec<RouterEnds> = (0..n)
        .map(|_| RouterEnds {
            senders: (0..n).map(|_| None).collect(),
            receivers: (0..n).map(|_| None).collect(),
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(capacity);
                ends[from].senders[to] = Some(tx);
                ends[to].receivers[from] = Some(rx);
            }
        }
    }
    ends
}

#[derive(Debug)]
pub enum RouterError {
    /// The target shard's channel is closed: it is shutting down or gone.
    ShardUnavailable(usize),
}

impl std::fmt::Display for RouterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouterError::ShardUnavailable(s) => write!(f, "shard {s} is unavailable"),
        }
    }
}

pub struct Router {
    me: usize,
    senders: Vec<Option<ConnectedSender<Envelope>>>,
    /// Calls waiting for their reply: id -> (target shard, reply slot).
    pending: RefCell<HashMap<u64, (usize, OneshotSender<AnyBox>)>>,
    next_id: Cell<u64>,
}

impl Router {
    /// Connects this shard's ends. Every shard must call this concurrently: a sender's
    /// connect waits for the receiving shard.
    pub async fn connect(
        me: usize,
        ends: RouterEnds,
    ) -> (Router, Vec<(usize, ConnectedReceiver<Envelope>)>) {
        let mut send_tasks = Vec::new();
        for (t, s) in ends.senders.into_iter().enumerate() {
            if let Some(s) = s {
                send_tasks.push((t, glommio::spawn_local(s.connect())));
            }
        }
        let mut recv_tasks = Vec::new();
        for (t, r) in ends.receivers.into_iter().enumerate() {
            if let Some(r) = r {
                recv_tasks.push((t, glommio::spawn_local(r.connect())));
            }
        }
        let mut senders: Vec<Option<ConnectedSender<Envelope>>> = Vec::new();
        for (t, task) in send_tasks {
            while senders.len() < t {
                senders.push(None);
            }
            senders.push(Some(task.await));
        }
        let mut receivers = Vec::new();
        for (t, task) in recv_tasks {
            receivers.push((t, task.await));
        }
        (
            Router {
                me,
                senders,
                pending: RefCell::new(HashMap::new()),
                next_id: Cell::new(1),
            },
            receivers,
        )
    }

    pub fn me(&self) -> usize {
        self.me
    }

    fn sender(&self, to: usize) -> Option<&ConnectedSender<Envelope>> {
        self.senders.get(to).and_then(|s| s.as_ref())
    }

    /// Runs `f` on shard `to` and returns its result. `to` must not be this shard
    /// (`Shard::call` runs local calls directly).
    pub async fn call_remote<T, F, Fut>(&self, to: usize, f: F) -> Result<T, RouterError>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        debug_assert_ne!(to, self.me);
        let Some(sender) = self.sender(to) else {
            return Err(RouterError::ShardUnavailable(to));
        };
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot();
        self.pending.borrow_mut().insert(id, (to, tx));
        let job: Job =
            Box::new(move |shard| Box::pin(async move { Box::new(f(shard).await) as AnyBox }));
        if sender.send(Envelope::Call { id, job }).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(RouterError::ShardUnavailable(to));
        }
        match rx.await {
            Some(value) => match value.downcast::<T>() {
                Ok(v) => Ok(*v),
                // The reply type is fixed by the call site that created `id`: a mismatch is a bug.
                Err(_) => unreachable!("router reply of the wrong type"),
            },
            None => Err(RouterError::ShardUnavailable(to)),
        }
    }

    /// Serves one peer's channel until it closes: runs calls, completes replies.
    pub async fn serve_peer(shard: Rc<Shard>, peer: usize, rx: ConnectedReceiver<Envelope>) {
        while let Some(env) = rx.recv().await {
            match env {
                Envelope::Call { id, job } => {
                    let shard = shard.clone();
                    // Each call runs as its own task so a slow call never blocks the channel,
                    // and this loop never awaits a send (no cross-shard deadlock).
                    glommio::spawn_local(async move {
                        let value = job(shard.clone()).await;
                        if let Some(sender) = shard.router.sender(peer)
                            && sender.send(Envelope::Reply { id, value }).await.is_err()
                        {
                            log::debug!("shard {peer} went away before its reply {id}");
                        }
                    })
                    .detach();
                }
                Envelope::Reply { id, value } => {
                    let tx = shard.router.pending.borrow_mut().remove(&id);
                    match tx {
                        Some((_, tx)) => tx.send(value),
                        None => log::warn!("reply {id} from shard {peer} matches no pending call"),
                    }
                }
            }
        }
        // The peer closed its sender: fail every call still waiting on it (dropping the reply
        // slot resolves the caller with ShardUnavailable instead of leaving it hanging).
        log::debug!("router channel from shard {peer} closed");
        shard
            .router
            .pending
            .borrow_mut()
            .retain(|_, (to, _)| *to != peer);
    }

    /// Closes the outgoing channels (shutdown).
    pub fn close(&self) {
        for s in self.senders.iter().flatten() {
            s.close();
        }
    }
}
