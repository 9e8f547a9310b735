//! The gRPC edge of the order service: requests are parsed into domain types
//! here, decisions are committed through `events`, and every error becomes a
//! precise status through `error`.

use orderflow_eventbus::AppendError;
use orderflow_platform::{
    paging,
    status::{FieldViolation, check_uuid},
};
use orderflow_proto::{
    money::v1::Money as PbMoney,
    order::v1::{
        self as pb, CancelOrderRequest, CancelOrderResponse, CreateOrderRequest,
        CreateOrderResponse, GetOrderRequest, GetOrderResponse, ListOrdersRequest,
        ListOrdersResponse, WatchOrderRequest, WatchOrderResponse,
        order_service_server::OrderService,
    },
};
use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    domain::{NewOrder, OrderStatus, RawLine, Transition},
    error::OrderError,
    events::{Current, OrderEvent, OrderEvents, advance, now, status_of, status_to_proto},
};
use orderflow_eventbus::aggregate::Start;

/// The `orderflow.order.v1.OrderService` implementation.
#[derive(Clone)]
pub struct OrderApi {
    events: OrderEvents,
    /// How long a new order may wait for its payment (`None`: forever).
    payment_deadline: Option<std::time::Duration>,
    /// Ends WatchOrder streams when the service stops, so a graceful
    /// shutdown does not wait on watchers forever.
    shutdown: CancellationToken,
}

impl OrderApi {
    /// The API over the order event store; new orders get a payment
    /// deadline `payment_deadline` after their creation, and `shutdown` ends
    /// open watches.
    pub fn new(
        events: OrderEvents,
        payment_deadline: Option<std::time::Duration>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            events,
            payment_deadline,
            shutdown,
        }
    }

    async fn create(&self, request: CreateOrderRequest) -> Result<pb::Order, OrderError> {
        let lines: Vec<RawLine<'_>> = request
            .items
            .iter()
            .map(|item| RawLine {
                sku: &item.sku,
                quantity: item.quantity,
                unit_price: item
                    .unit_price
                    .as_ref()
                    .map(|m| (m.currency_code.as_str(), m.units, m.nanos)),
            })
            .collect();
        let new = NewOrder::parse(&request.customer_id, &lines, &request.request_id)
            .map_err(OrderError::InvalidArgument)?;
        let order_id = new.order_id().to_string();
        let (currency_code, units, nanos) = new.total.parts();
        let created = now();
        let order = pb::Order {
            order_id: order_id.clone(),
            customer_id: new.customer_id.clone(),
            items: request.items.clone(),
            total: Some(PbMoney {
                currency_code,
                units,
                nanos,
            }),
            status: status_to_proto(OrderStatus::PendingPayment) as i32,
            payment_id: String::new(),
            failure_reason: String::new(),
            create_time: Some(created),
            update_time: Some(created),
            request_id: request.request_id.clone(),
            version: 1,
        };
        // Expecting sequence 0 on the order's subject makes the append fail
        // when the order exists: an idempotent replay or a reused request id.
        let appended = match self.payment_deadline {
            None => self.events.append(OrderEvent::Created, &order, 0).await,
            Some(deadline) => {
                // The order is answered only when its deadline is stored
                // too: every acknowledged order has its deadline. A
                // deadline stored without its order (the append failed)
                // fires on no order and is dropped; a retry with the same
                // request id stores neither again: the order's append
                // expects no event, the schedule no schedule, so the first
                // deadline stays.
                let at = std::time::SystemTime::now() + deadline;
                self.events
                    .append_with_deadline(OrderEvent::Created, &order, 0, at)
                    .await
            }
        };
        match appended {
            Ok(appended) if !appended.duplicate => {
                // Per order, so at DEBUG: traces and the status-change
                // counter carry it; a line per order cost measurable CPU.
                tracing::debug!(order_id = %order.order_id, total = %new.total, "order created");
                Ok(order)
            }
            Ok(_) | Err(AppendError::Conflict { .. }) => {
                let existing = self
                    .events
                    .load(&order_id)
                    .await?
                    .ok_or_else(|| OrderError::NotReadableYet(order_id.clone()))?
                    .state;
                if existing.customer_id == order.customer_id && existing.items == order.items {
                    Ok(existing)
                } else {
                    Err(OrderError::RequestIdReused {
                        request_id: request.request_id,
                        order_id,
                    })
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Order `order_id` as last committed; the id is checked first.
    async fn existing(&self, order_id: &str) -> Result<Current, OrderError> {
        order_id_arg(order_id)?;
        self.events
            .load(order_id)
            .await?
            .ok_or_else(|| OrderError::NotFound(order_id.to_owned()))
    }

    async fn cancel(&self, order_id: &str) -> Result<pb::Order, OrderError> {
        // From the stream, not this replica's memory: the caller is
        // answered with the order even when nothing changes.
        self.events
            .change(order_id, Start::Stream, |order| {
                let status = status_of(order).ok_or_else(|| OrderError::Corrupt {
                    order_id: order.order_id.clone(),
                    reason: String::from("status is unspecified"),
                })?;
                match status.cancel() {
                    Ok(Transition::Unchanged) => Ok(None),
                    Ok(Transition::To(next)) => {
                        Ok(Some((OrderEvent::Cancelled, advance(order, next))))
                    }
                    Err(refused) => Err(OrderError::FailedPrecondition(format!(
                        "order {} cannot be cancelled: {refused}",
                        order.order_id
                    ))),
                }
            })
            .await
    }
}

fn order_id_arg(order_id: &str) -> Result<(), OrderError> {
    let mut violations = Vec::new();
    check_uuid("order_id", order_id, &mut violations);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(OrderError::InvalidArgument(violations))
    }
}

/// The stream WatchOrder answers with.
pub type WatchStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<WatchOrderResponse, Status>> + Send>>;

/// Forwards order changes to a watcher until the order is settled, the
/// watcher goes away, or the service stops.
async fn forward_changes(
    changes: impl futures_util::Stream<Item = Result<pb::Order, OrderError>>,
    watcher: mpsc::Sender<Result<WatchOrderResponse, Status>>,
    shutdown: CancellationToken,
) {
    use futures_util::StreamExt;
    let mut changes = std::pin::pin!(changes);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = watcher
                    .send(Err(Status::unavailable("the server is shutting down; call WatchOrder again")))
                    .await;
                return;
            }
            _ = watcher.closed() => return,
            next = changes.next() => next,
        };
        match next {
            Some(Ok(order)) => {
                let settled = status_of(&order).is_some_and(OrderStatus::is_settled);
                let response = WatchOrderResponse { order: Some(order) };
                if watcher.send(Ok(response)).await.is_err() || settled {
                    return;
                }
            }
            Some(Err(error)) => {
                let _ = watcher.send(Err(error.into())).await;
                return;
            }
            None => {
                let _ = watcher
                    .send(Err(Status::unavailable(
                        "the event stream ended; call WatchOrder again",
                    )))
                    .await;
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    type WatchOrderStream = WatchStream;

    async fn watch_order(
        &self,
        request: Request<WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let current = self.existing(&request.into_inner().order_id).await?;
        // From the current event on: the watcher sees the state it starts
        // from, then every change, with nothing missed in between.
        let changes = self.events.watch(&current.state, current.sequence).await?;
        let (watcher, stream) = mpsc::channel(8);
        tokio::spawn(
            forward_changes(changes, watcher, self.shutdown.clone())
                .instrument(tracing::Span::current()),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        )))
    }

    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let order = self.create(request.into_inner()).await?;
        Ok(Response::new(CreateOrderResponse { order: Some(order) }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let current = self.existing(&request.into_inner().order_id).await?;
        Ok(Response::new(GetOrderResponse {
            order: Some(current.state),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Vec::new();
        let size = paging::size(request.page_size, &mut violations);
        let customer = paging::owner_filter("customer_id", &request.customer_id, &mut violations);
        let status = match pb::OrderStatus::try_from(request.status) {
            Ok(pb::OrderStatus::Unspecified) => None,
            Ok(status) => Some(status),
            Err(_) => {
                violations.push(FieldViolation::new(
                    "status",
                    format!("{} is not an OrderStatus value", request.status),
                ));
                None
            }
        };
        let filters = paging::filters(&[&request.customer_id, &request.status.to_string()]);
        let from = paging::start(&request.page_token, &filters, &mut violations);
        if !violations.is_empty() {
            return Err(OrderError::InvalidArgument(violations).into());
        }
        let page = self.events.list(customer, status, from, size).await?;
        Ok(Response::new(ListOrdersResponse {
            orders: page.items,
            next_page_token: paging::next_token(&filters, page.next),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        let order_id = request.into_inner().order_id;
        order_id_arg(&order_id)?;
        let order = self.cancel(&order_id).await?;
        Ok(Response::new(CancelOrderResponse { order: Some(order) }))
    }
}
