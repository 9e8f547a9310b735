//! Every way a payment operation fails, and the one table that turns each
//! into the gRPC status a client sees.

use orderflow_eventbus::{AppendError, aggregate::StoreError, index::IndexError};
use orderflow_platform::{
    status::{FieldViolation, invalid_argument},
    throttle::warn_unavailable,
};
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
    /// The event store failed: JetStream did not answer or confirm, or a
    /// stored event is not a payment.
    #[error("{}", .0.client_message("payment"))]
    Store(#[from] StoreError),
    /// A payment read back after losing a race to another writer was not
    /// there (a replica that has not stored the winner's event yet).
    #[error("event store unavailable: payment {0} vanished")]
    Vanished(String),
    /// A stored payment, or the order a payment is for, breaks a rule every
    /// one keeps (a status, a positive total).
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
        Self::Store(error.into())
    }
}

impl From<IndexError> for PaymentError {
    fn from(error: IndexError) -> Self {
        Self::Store(error.into())
    }
}

impl From<PaymentError> for Status {
    fn from(error: PaymentError) -> Self {
        match &error {
            PaymentError::InvalidArgument(violations) => invalid_argument(violations),
            PaymentError::NotFound(_) => Status::not_found(error.to_string()),
            PaymentError::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
            // Every change retries its conflicts; one that reaches a caller
            // lost every race, and the caller may try again.
            PaymentError::Contended(_)
            | PaymentError::Store(StoreError::Append(AppendError::Conflict { .. })) => {
                Status::aborted(error.to_string())
            }
            PaymentError::Gateway(GatewayError::Rejected(_)) => {
                Status::failed_precondition(error.to_string())
            }
            PaymentError::Gateway(_)
            | PaymentError::Store(
                StoreError::Load(_) | StoreError::Index(_) | StoreError::Append(_),
            )
            | PaymentError::Vanished(_) => {
                warn_unavailable(&error);
                Status::unavailable(format!("{error}; retry later"))
            }
            PaymentError::Store(StoreError::Corrupt { .. }) | PaymentError::Corrupt { .. } => {
                tracing::error!(%error, "corrupt event");
                Status::internal(error.to_string())
            }
        }
    }
}
