//! The order list projection: the latest version of every order in the
//! `ORDER_VIEWS` KV bucket, keyed `<customer>.<order_id>` so one customer's
//! orders are read with a key pattern.
//!
//! It is fed by the durable consumer `order-projection` on `ORDERS`, shared by
//! every replica; writes are versioned (see `orderflow_eventbus::view`), so a
//! redelivered or stale event never rolls an order back.

use orderflow_eventbus::{
    EventHandler, JetStream, Outcome, ReceivedEvent, ViewStore, view::key_token,
};
use orderflow_proto::order::v1 as pb;
use prost::Message;
use std::time::Duration;

use crate::{error::OrderError, events::snapshot};

/// The bucket's name.
pub const BUCKET: &str = "ORDER_VIEWS";
/// The durable consumer that feeds it.
pub const DURABLE: &str = "order-projection";

/// The order list projection.
#[derive(Clone)]
pub struct OrderViews {
    view: ViewStore,
}

/// A page of orders.
#[derive(Debug)]
pub struct Page {
    /// The orders, by order id.
    pub orders: Vec<pb::Order>,
    /// The last order id of this page when more follow.
    pub last: Option<String>,
}

impl OrderViews {
    /// Opens (or creates) the bucket.
    pub async fn open(js: JetStream, replicas: usize) -> Result<Self, OrderError> {
        Ok(Self {
            view: ViewStore::open(js, BUCKET, replicas).await?,
        })
    }

    /// Stores `order` unless a newer version is there.
    pub async fn put(&self, order: &pb::Order) -> Result<bool, OrderError> {
        let key = format!("{}.{}", key_token(&order.customer_id), order.order_id);
        Ok(self
            .view
            .upsert(&key, order.version, &order.encode_to_vec())
            .await?)
    }

    /// Orders of `customer_id` (all when `None`) in `status` (any when
    /// `None`), ordered by order id, after `after`, at most `size`.
    pub async fn list(
        &self,
        customer_id: Option<&str>,
        status: Option<pb::OrderStatus>,
        after: Option<&str>,
        size: usize,
    ) -> Result<Page, OrderError> {
        let pattern = match customer_id {
            Some(customer) => format!("{}.*", key_token(customer)),
            None => String::from(">"),
        };
        let mut orders: Vec<pb::Order> = self
            .view
            .scan(&pattern)
            .await?
            .into_iter()
            .filter_map(|(_, value)| pb::Order::decode(value.as_ref()).ok())
            .filter(|o| status.is_none_or(|s| o.status == s as i32))
            .filter(|o| after.is_none_or(|a| o.order_id.as_str() > a))
            .collect();
        orders.sort_by(|a, b| a.order_id.cmp(&b.order_id));
        let more = orders.len() > size;
        orders.truncate(size);
        let last = more
            .then(|| orders.last().map(|o| o.order_id.clone()))
            .flatten();
        Ok(Page { orders, last })
    }
}

/// Feeds the projection from order events.
pub struct ProjectionHandler {
    views: OrderViews,
}

impl ProjectionHandler {
    /// A handler writing to `views`.
    pub fn new(views: OrderViews) -> Self {
        Self { views }
    }
}

impl EventHandler for ProjectionHandler {
    async fn handle(&self, event: &ReceivedEvent) -> Outcome {
        let order = match snapshot(event.ce_type(), &event.payload) {
            Ok(order) => order,
            Err(reason) => return Outcome::Reject { reason },
        };
        match self.views.put(&order).await {
            Ok(_) => Outcome::Done,
            Err(error) => Outcome::Retry {
                after: Duration::from_secs(1),
                reason: error.to_string(),
            },
        }
    }
}
