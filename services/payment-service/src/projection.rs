//! The payment list projection: the latest version of every payment in the
//! `PAYMENT_VIEWS` KV bucket, keyed `<customer>.<order_id>` so payments are
//! found by customer, by order, or both, with one key pattern.
//!
//! Fed by the durable consumer `payment-projection` on `PAYMENTS`; writes are
//! versioned, so a redelivered event never rolls a payment back.

use std::time::Duration;

use orderflow_eventbus::{
    EventHandler, JetStream, Outcome, ReceivedEvent, ViewStore, consumer::retry_delay,
    view::key_token,
};
use orderflow_proto::payment::v1 as pb;
use prost::Message;

use crate::{error::PaymentError, events::snapshot};

/// The bucket's name.
pub const BUCKET: &str = "PAYMENT_VIEWS";
/// The durable consumer that feeds it.
pub const DURABLE: &str = "payment-projection";

/// The payment list projection.
#[derive(Clone)]
pub struct PaymentViews {
    view: ViewStore,
}

/// A page of payments.
#[derive(Debug)]
pub struct Page {
    /// The payments, by payment id.
    pub payments: Vec<pb::Payment>,
    /// The last payment id of this page when more follow.
    pub last: Option<String>,
}

impl PaymentViews {
    /// Opens (or creates) the bucket.
    pub async fn open(js: JetStream, replicas: usize) -> Result<Self, PaymentError> {
        Ok(Self {
            view: ViewStore::open(js, BUCKET, replicas).await?,
        })
    }

    /// Stores `payment` unless a newer version is there.
    pub async fn put(&self, payment: &pb::Payment) -> Result<bool, PaymentError> {
        let key = format!("{}.{}", key_token(&payment.customer_id), payment.order_id);
        Ok(self
            .view
            .upsert(&key, payment.version, &payment.encode_to_vec())
            .await?)
    }

    /// Payments of `order_id` and/or `customer_id` (all when both are
    /// `None`), ordered by payment id, after `after`, at most `size`.
    pub async fn list(
        &self,
        order_id: Option<&str>,
        customer_id: Option<&str>,
        after: Option<&str>,
        size: usize,
    ) -> Result<Page, PaymentError> {
        let pattern = match (customer_id, order_id) {
            (Some(customer), Some(order)) => format!("{}.{order}", key_token(customer)),
            (Some(customer), None) => format!("{}.*", key_token(customer)),
            (None, Some(order)) => format!("*.{order}"),
            (None, None) => String::from(">"),
        };
        let mut payments: Vec<pb::Payment> = self
            .view
            .scan(&pattern)
            .await?
            .into_iter()
            .filter_map(|(_, value)| pb::Payment::decode(value.as_ref()).ok())
            .filter(|p| after.is_none_or(|a| p.payment_id.as_str() > a))
            .collect();
        payments.sort_by(|a, b| a.payment_id.cmp(&b.payment_id));
        let more = payments.len() > size;
        payments.truncate(size);
        let last = more
            .then(|| payments.last().map(|p| p.payment_id.clone()))
            .flatten();
        Ok(Page { payments, last })
    }
}

/// Feeds the projection from payment events.
pub struct ProjectionHandler {
    views: PaymentViews,
}

impl ProjectionHandler {
    /// A handler writing to `views`.
    pub fn new(views: PaymentViews) -> Self {
        Self { views }
    }
}

impl EventHandler for ProjectionHandler {
    async fn handle(&self, event: &ReceivedEvent) -> Outcome {
        let payment = match snapshot(event.ce_type(), &event.payload) {
            Ok(payment) => payment,
            Err(reason) => return Outcome::Reject { reason },
        };
        match self.views.put(&payment).await {
            Ok(_) => Outcome::Done,
            Err(error) => Outcome::Retry {
                after: retry_delay(event.delivered).min(Duration::from_secs(5)),
                reason: error.to_string(),
            },
        }
    }
}
