//! Every way an order operation fails, and the one table that turns each into
//! the gRPC status a client sees.

use orderflow_eventbus::{AppendError, WatchError, aggregate::StoreError};
use orderflow_platform::{
    status::{FieldViolation, invalid_argument},
    throttle::warn_unavailable,
};
use tonic::Status;

/// Why an order operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The request is malformed; every bad field is listed.
    #[error("invalid request: {0:?}")]
    InvalidArgument(Vec<FieldViolation>),
    /// No order has this id.
    #[error("order {0} not found")]
    NotFound(String),
    /// The request id was used before for an order with other content.
    #[error("request_id {request_id:?} was already used for order {order_id} with other content")]
    RequestIdReused {
        /// The reused key.
        request_id: String,
        /// The order it names.
        order_id: String,
    },
    /// The order's state does not allow the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The order kept changing under concurrent writers.
    #[error("order {0} is being changed concurrently; retry")]
    Contended(String),
    /// The event store failed: JetStream did not answer or confirm, or a
    /// stored event is not an order.
    #[error("{}", .0.client_message("order"))]
    Store(#[from] StoreError),
    /// A watch of an order's events could not start, or broke.
    #[error("event store unavailable: {0}")]
    Watch(#[from] WatchError),
    /// An order committed a moment ago could not be read back (a replica
    /// that has not stored it yet).
    #[error("event store unavailable: order {0} is committed but not readable yet")]
    NotReadableYet(String),
    /// A stored order breaks a rule every order keeps (it has a status).
    #[error("stored event of order {order_id} is unreadable: {reason}")]
    Corrupt {
        /// The order.
        order_id: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The delivery of an event on which its handler first believes that the
/// order it names does not exist; the deliveries before it retry, backing
/// off (1 + 2 + 4 + 8 + 16 = 31 s in all).
///
/// A "none" is not the truth at once, not even the stream leader's: a
/// leader that was paused or cut off keeps answering from what it had
/// stored until it learns that another was elected, which nats-server
/// notices within about 20 s (it checks for a lost quorum every 10 s, over
/// the last 10 s). An event names an order that existed when it was
/// written (the payment service charged for it; the order scheduled its
/// own deadline), so its absence has to outlast that before it is believed.
pub const MISSING_ORDER_BELIEVED_AT: i64 = 6;

impl OrderError {
    /// What a consumer does with a message whose handling failed with this
    /// on its `delivered`-th delivery: refuse it (dead letter) when no retry
    /// can change the answer, retry it backing off otherwise. A missing
    /// order is retried until [`MISSING_ORDER_BELIEVED_AT`].
    pub fn outcome(self, delivered: i64) -> orderflow_eventbus::Outcome {
        match self {
            error @ Self::NotFound(_) if delivered < MISSING_ORDER_BELIEVED_AT => {
                orderflow_eventbus::Outcome::backing_off(delivered, error.to_string())
            }
            error @ (Self::NotFound(_)
            | Self::Corrupt { .. }
            | Self::Store(StoreError::Corrupt { .. })) => orderflow_eventbus::Outcome::Reject {
                reason: error.to_string(),
            },
            error => orderflow_eventbus::Outcome::backing_off(delivered, error.to_string()),
        }
    }
}

impl From<AppendError> for OrderError {
    fn from(error: AppendError) -> Self {
        Self::Store(error.into())
    }
}

impl From<OrderError> for Status {
    fn from(error: OrderError) -> Self {
        match &error {
            OrderError::InvalidArgument(violations) => invalid_argument(violations),
            OrderError::NotFound(_) => Status::not_found(error.to_string()),
            OrderError::RequestIdReused { .. } => {
                Status::already_exists(format!("{error}; use a new request_id for a new order"))
            }
            OrderError::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
            // Every change retries its conflicts; one that reaches a caller
            // lost every race, and the caller may try again.
            OrderError::Contended(_)
            | OrderError::Store(StoreError::Append(AppendError::Conflict { .. })) => {
                Status::aborted(error.to_string())
            }
            OrderError::Store(
                StoreError::Load(_) | StoreError::Index(_) | StoreError::Append(_),
            )
            | OrderError::Watch(_)
            | OrderError::NotReadableYet(_) => {
                warn_unavailable(&error);
                Status::unavailable(format!(
                    "{error}; retry shortly (CreateOrder is safe to retry with the same request_id)"
                ))
            }
            OrderError::Store(StoreError::Corrupt { .. }) | OrderError::Corrupt { .. } => {
                tracing::error!(%error, "corrupt event");
                Status::internal(error.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use orderflow_eventbus::Outcome;

    use super::OrderError;

    /// A payment result or deadline that fails while the broker is away
    /// waits longer with each delivery: its ten deliveries outlast an
    /// outage of minutes instead of seconds.
    #[test]
    fn a_passing_failure_backs_off() {
        let delay =
            |delivered| match OrderError::NotReadableYet(String::from("o")).outcome(delivered) {
                Outcome::Retry { after, .. } => after,
                other => panic!("a store that lags is retried, not {other:?}"),
            };
        assert_eq!(delay(1), Duration::from_secs(1));
        assert_eq!(delay(4), Duration::from_secs(8));
        let all: Duration = (1..10).map(delay).sum();
        assert!(all >= Duration::from_secs(180), "nine retries wait {all:?}");
    }

    /// A missing order may be one a replica has not stored yet, or one a
    /// replaced leader never got: it is retried for half a minute, and
    /// refused (dead-lettered) only then.
    #[test]
    fn a_missing_order_is_retried_for_half_a_minute_and_then_refused() {
        let missing = |delivered| OrderError::NotFound(String::from("o")).outcome(delivered);
        let waited: Duration = (1..super::MISSING_ORDER_BELIEVED_AT)
            .map(|delivered| match missing(delivered) {
                Outcome::Retry { after, reason } => {
                    assert_eq!(reason, "order o not found");
                    after
                }
                other => panic!("delivery {delivered} of a missing order: {other:?}"),
            })
            .sum();
        assert_eq!(waited, Duration::from_secs(31));
        assert!(matches!(
            missing(super::MISSING_ORDER_BELIEVED_AT),
            Outcome::Reject { reason } if reason == "order o not found"
        ));
    }
}
