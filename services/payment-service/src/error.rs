//! Every way a payment operation fails, and the one table that turns each
//! into the gRPC status a client sees.

use orderflow_eventbus::{AppendError, LoadError, aggregate::StoreError};
use orderflow_platform::status::{FieldViolation, invalid_argument};
use tonic::Status;

use crate::gateway::GatewayError;

/// Why a payment operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The request is malformed; every bad field is listed.
    #[error("invalid request: {0:?}")]
    InvalidArgument(Vec<FieldViolation>),
    /// No payment has this id.
    #[error("payment {0} not found")]
    NotFound(String),
    /// The payment's state does not allow the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The payment kept changing under concurrent writers.
    #[error("payment {0} is being changed concurrently; retry")]
    Contended(String),
    /// The gateway failed (transiently, or its breaker is open).
    #[error("{0}")]
    Gateway(#[from] GatewayError),
    /// JetStream could not be reached or did not confirm.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// A stored event cannot be decoded.
    #[error("stored event of payment {payment_id} is unreadable: {reason}")]
    Corrupt {
        /// The payment.
        payment_id: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<AppendError> for PaymentError {
    fn from(error: AppendError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<LoadError> for PaymentError {
    fn from(error: LoadError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<StoreError> for PaymentError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Corrupt { id, reason } => Self::Corrupt {
                payment_id: id,
                reason,
            },
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<PaymentError> for Status {
    fn from(error: PaymentError) -> Self {
        match &error {
            PaymentError::InvalidArgument(violations) => invalid_argument(violations),
            PaymentError::NotFound(_) => Status::not_found(error.to_string()),
            PaymentError::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
            PaymentError::Contended(_) => Status::aborted(error.to_string()),
            PaymentError::Gateway(GatewayError::Rejected(_)) => {
                Status::failed_precondition(error.to_string())
            }
            PaymentError::Gateway(_) | PaymentError::Unavailable(_) => {
                tracing::warn!(%error, "answering UNAVAILABLE");
                Status::unavailable(format!("{error}; retry later"))
            }
            PaymentError::Corrupt { .. } => {
                tracing::error!(%error, "corrupt event");
                Status::internal(error.to_string())
            }
        }
    }
}
