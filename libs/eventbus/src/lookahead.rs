//! What a replica already knows about the messages behind the one it
//! handles, so a handler can tell "nothing about this aggregate was stored
//! behind it" without asking the broker.
//!
//! Every delivery names the consumer sequence it took (`c`) and how many
//! messages of the consumer's subjects were stored behind it (`p`). First
//! deliveries go out in stream order, so when this replica has itself
//! received consumer sequences `c + 1 ..= c + p`, each a first delivery,
//! those are exactly the `p` messages that were behind it: if none of them
//! is on the same aggregate, none existed when it was delivered. A gap
//! (another replica took one of them), a redelivery in between or a wait
//! that runs out means "unknown", and the handler reads instead. Under
//! load nearly every delivery has messages behind it, and with one replica
//! they arrive microseconds later, which is what makes this worth having:
//! without it the payment service read twice per saga (see
//! `docs/benchmarks.md`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;

/// How many aggregates a replica remembers the last delivery of. A handler
/// asks while it holds one of the consumer's permits, and the pull loop
/// records a delivery only before waiting for a permit, so between a
/// delivery's record and its handler's question at most `concurrency` (64)
/// more are recorded: far fewer than this, so nothing the answer depends on
/// has been forgotten.
const REMEMBERED: usize = 4096;

/// What a replica received lately on one durable consumer.
#[derive(Debug, Default)]
pub struct Lookahead {
    state: Mutex<State>,
    arrived: Notify,
    /// The most messages behind a delivery worth waiting for: what the pull
    /// loop reads ahead of the handlers, its concurrency. With more behind
    /// it (a backlog), they cannot all be here while this handler holds its
    /// permit, so the answer is "unknown" at once.
    most_behind: u64,
}

/// Kept so that every question is answered in constant time, however many
/// handlers ask at once.
#[derive(Debug, Default)]
struct State {
    /// The highest consumer sequence received.
    last: u64,
    /// The highest consumer sequence that did not follow the one before it
    /// as a first delivery (a gap, a redelivery, or out of order): no run
    /// of known deliveries goes across it.
    last_break: u64,
    /// The last consumer sequence received per aggregate.
    latest: HashMap<String, u64>,
    /// The aggregates of `latest` in the order they were last seen, so the
    /// oldest can be forgotten.
    seen_order: VecDeque<String>,
}

/// What the lookahead knows about the messages behind a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behind {
    /// Every message that was stored behind it is known, and none is on its
    /// aggregate.
    NothingOnItsAggregate,
    /// One of them is on its aggregate.
    SomethingOnItsAggregate,
    /// Not every one is known to this replica.
    Unknown,
}

impl Lookahead {
    /// A lookahead shared by the pull loop and the handlers of a consumer
    /// that handles up to `concurrency` messages at once.
    pub fn new(concurrency: usize) -> Arc<Self> {
        Arc::new(Self {
            most_behind: u64::try_from(concurrency).unwrap_or(u64::MAX),
            ..Self::default()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain values: a poisoned map is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a delivery as the pull loop receives it.
    pub fn record(&self, consumer_sequence: u64, aggregate: &str, first_delivery: bool) {
        {
            let mut state = self.lock();
            if consumer_sequence <= state.last {
                // The consumer's sequence started again (it was deleted and
                // created anew, or the broker lost it): nothing recorded
                // before says anything about these deliveries.
                *state = State::default();
                state.last_break = consumer_sequence;
            } else if consumer_sequence != state.last + 1 || !first_delivery {
                state.last_break = consumer_sequence;
            }
            state.last = consumer_sequence;
            let known = state.latest.insert(aggregate.to_owned(), consumer_sequence);
            if known.is_none() {
                state.seen_order.push_back(aggregate.to_owned());
                while state.seen_order.len() > REMEMBERED {
                    if let Some(oldest) = state.seen_order.pop_front() {
                        state.latest.remove(&oldest);
                    }
                }
            }
        }
        self.arrived.notify_waiters();
    }

    /// What is known about the `pending` messages that were stored behind
    /// the delivery at `consumer_sequence` on `aggregate`, waiting up to
    /// `wait` for deliveries already on their way to this replica.
    pub async fn behind(
        &self,
        consumer_sequence: u64,
        pending: u64,
        aggregate: &str,
        wait: Duration,
    ) -> Behind {
        if pending == 0 {
            return Behind::NothingOnItsAggregate;
        }
        if pending > self.most_behind {
            return Behind::Unknown;
        }
        let last = consumer_sequence + pending;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a delivery recorded in between
            // still wakes this wait.
            let arrived = self.arrived.notified();
            match self.judge(consumer_sequence, last, aggregate) {
                Some(known) => return known,
                None => {
                    if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                        return Behind::Unknown;
                    }
                }
            }
        }
    }

    /// The answer when the deliveries after `from` up to `last` settle it,
    /// `None` while some may still arrive.
    fn judge(&self, from: u64, last: u64, aggregate: &str) -> Option<Behind> {
        let state = self.lock();
        if state.latest.get(aggregate).is_some_and(|&seen| seen > from) {
            // Something on the aggregate came after it: behind it, or
            // later still; either way it is no longer alone.
            return Some(Behind::SomethingOnItsAggregate);
        }
        if state.last_break > from {
            // Another replica took one, or a redelivery came between.
            return Some(Behind::Unknown);
        }
        if state.last >= last {
            return Some(Behind::NothingOnItsAggregate);
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NO_WAIT: Duration = Duration::from_millis(0);

    #[tokio::test]
    async fn nothing_pending_is_nothing_behind() {
        let look = Lookahead::new(64);
        assert_eq!(
            look.behind(7, 0, "orders.c.1", NO_WAIT).await,
            Behind::NothingOnItsAggregate
        );
    }

    #[tokio::test]
    async fn the_messages_behind_are_judged_once_all_are_here() {
        let look = Lookahead::new(64);
        look.record(10, "orders.c.1", true);
        look.record(11, "orders.c.2", true);
        look.record(12, "orders.c.3", true);
        assert_eq!(
            look.behind(10, 2, "orders.c.1", NO_WAIT).await,
            Behind::NothingOnItsAggregate
        );
        look.record(13, "orders.c.1", true);
        assert_eq!(
            look.behind(10, 3, "orders.c.1", NO_WAIT).await,
            Behind::SomethingOnItsAggregate
        );
    }

    #[tokio::test]
    async fn a_gap_or_a_redelivery_is_unknown() {
        let look = Lookahead::new(64);
        look.record(20, "orders.c.1", true);
        look.record(22, "orders.c.2", true);
        assert_eq!(
            look.behind(20, 2, "orders.c.1", NO_WAIT).await,
            Behind::Unknown,
            "21 went to another replica"
        );
        look.record(30, "orders.c.1", true);
        look.record(31, "orders.c.9", false);
        assert_eq!(
            look.behind(30, 1, "orders.c.1", NO_WAIT).await,
            Behind::Unknown,
            "a redelivery took the sequence"
        );
    }

    #[tokio::test]
    async fn a_consumer_that_starts_again_is_judged_afresh() {
        let look = Lookahead::new(64);
        for sequence in 1..=50 {
            look.record(sequence, "orders.c.old", true);
        }
        // Recreated: its sequences start again, and what follows 1 is not
        // known yet.
        look.record(1, "orders.c.1", true);
        assert_eq!(
            look.behind(1, 2, "orders.c.1", NO_WAIT).await,
            Behind::Unknown
        );
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_missing_delivery_arrives_or_runs_out() {
        let look = Lookahead::new(64);
        look.record(40, "orders.c.1", true);
        let waiting = {
            let look = look.clone();
            tokio::spawn(async move {
                look.behind(40, 1, "orders.c.1", Duration::from_secs(30))
                    .await
            })
        };
        tokio::task::yield_now().await;
        look.record(41, "orders.c.5", true);
        assert_eq!(waiting.await.unwrap(), Behind::NothingOnItsAggregate);
        assert_eq!(
            look.behind(41, 1, "orders.c.5", Duration::from_millis(5))
                .await,
            Behind::Unknown,
            "nothing more arrives"
        );
    }
}
