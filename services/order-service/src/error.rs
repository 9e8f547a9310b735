//! Every way an order operation fails, and the one table that turns each into
//! the gRPC status a client sees.

use orderflow_eventbus::{AppendError, LoadError, aggregate::StoreError};
use orderflow_platform::status::{FieldViolation, invalid_argument};
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
    /// JetStream could not be reached or did not confirm.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// A stored event cannot be decoded.
    #[error("stored event of order {order_id} is unreadable: {reason}")]
    Corrupt {
        /// The order.
        order_id: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<AppendError> for OrderError {
    fn from(error: AppendError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<LoadError> for OrderError {
    fn from(error: LoadError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<StoreError> for OrderError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Corrupt { id, reason } => Self::Corrupt {
                order_id: id,
                reason,
            },
            other => Self::Unavailable(other.to_string()),
        }
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
            OrderError::Contended(_) => Status::aborted(error.to_string()),
            OrderError::Unavailable(_) => {
                tracing::warn!(%error, "answering UNAVAILABLE");
                Status::unavailable(format!(
                    "{error}; retry shortly (CreateOrder is safe to retry with the same request_id)"
                ))
            }
            OrderError::Corrupt { .. } => {
                tracing::error!(%error, "corrupt event");
                Status::internal(error.to_string())
            }
        }
    }
}
