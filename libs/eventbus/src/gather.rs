//! Many single-subject reads of one stream, gathered into batched direct
//! gets: whatever is asked while one request is in flight goes out together
//! in the next.
//!
//! Under a backlog every charge of the payment service asks whether its
//! order has been cancelled, and up to a consumer's concurrency of them ask
//! at the same time. One direct get each costs the broker a request and an
//! answer per saga; one `multi_last` request answers all the asks of the
//! moment with a request, one message per subject found and the end-of-batch
//! status. Nothing waits for a batch to fill: an ask made while no request
//! is in flight goes out at once, so a lone reader pays what a plain direct
//! get costs.
//!
//! Written here rather than taken from a batching crate because the batch
//! is whatever queued while the previous read was out, which is a loop over
//! a channel, and the read itself is [`index::last_per_subject`].

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::{
    JetStream,
    index::{self, IndexError, IndexedEvent},
};

type Answer = Result<Option<IndexedEvent>, IndexError>;

struct Ask {
    subject: String,
    answer: oneshot::Sender<Answer>,
}

/// Gathered reads of the last message on literal subjects of one stream.
///
/// Cloning is cheap; all clones share one reading task, which ends when the
/// last clone is dropped.
///
/// A direct get may be answered by a replica that has not stored the
/// latest messages yet, so "none" may be stale on a replicated stream: use
/// this where a stale miss costs work, never correctness.
#[derive(Clone, Debug)]
pub struct GatheredReads {
    stream: String,
    asks: mpsc::UnboundedSender<Ask>,
}

impl GatheredReads {
    /// Starts the reading task for `stream` (on the current tokio runtime).
    pub fn new(js: JetStream, stream: impl Into<String>) -> Self {
        let stream = stream.into();
        let (asks, queue) = mpsc::unbounded_channel();
        tokio::spawn(read_gathered(js, stream.clone(), queue));
        Self { stream, asks }
    }

    /// The last message on `subject` (no wildcards), or `None` when the
    /// subject has none.
    pub async fn last(&self, subject: &str) -> Answer {
        if subject.split('.').any(|token| token == "*" || token == ">") {
            return Err(IndexError::Refused {
                stream: self.stream.clone(),
                status: 400,
                description: format!("a gathered read takes a literal subject, not {subject:?}"),
            });
        }
        let (answer, answered) = oneshot::channel();
        let gone = || IndexError::ReaderStopped {
            stream: self.stream.clone(),
        };
        self.asks
            .send(Ask {
                subject: subject.to_owned(),
                answer,
            })
            .map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

/// Reads until every [`GatheredReads`] is gone: takes the asks queued now
/// (at most [`index::MAX_FILTERS`] subjects), answers them with one
/// request, and repeats.
async fn read_gathered(js: JetStream, stream: String, mut queue: mpsc::UnboundedReceiver<Ask>) {
    while let Some(first) = queue.recv().await {
        // Several asks for one subject share its filter and its answer.
        let mut waiting: HashMap<String, Vec<oneshot::Sender<Answer>>> = HashMap::new();
        waiting.entry(first.subject).or_default().push(first.answer);
        while waiting.len() < index::MAX_FILTERS {
            match queue.try_recv() {
                Ok(ask) => waiting.entry(ask.subject).or_default().push(ask.answer),
                Err(_) => break,
            }
        }
        let subjects: Vec<String> = waiting.keys().cloned().collect();
        match index::last_per_subject(&js, &stream, &subjects).await {
            Ok(found) => {
                let mut found: HashMap<String, IndexedEvent> = found
                    .into_iter()
                    .map(|event| (event.subject.clone(), event))
                    .collect();
                for (subject, answers) in waiting {
                    let event = found.remove(&subject);
                    for answer in answers {
                        // An asker that gave up no longer needs its answer.
                        let _ = answer.send(Ok(event.clone()));
                    }
                }
            }
            Err(error) => {
                for answer in waiting.into_values().flatten() {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }
}
