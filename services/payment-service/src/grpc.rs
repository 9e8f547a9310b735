//! The gRPC edge of the payment service.

use orderflow_platform::{paging, status::check_uuid};
use orderflow_proto::payment::v1::{
    GetPaymentRequest, GetPaymentResponse, ListPaymentsRequest, ListPaymentsResponse,
    RefundPaymentRequest, RefundPaymentResponse, payment_service_server::PaymentService,
};
use tonic::{Request, Response, Status};

use crate::{charging::Payments, domain::payment_id_for, error::PaymentError};

/// The `orderflow.payment.v1.PaymentService` implementation.
#[derive(Clone)]
pub struct PaymentApi {
    payments: Payments,
}

impl PaymentApi {
    /// The API over the payment operations.
    pub fn new(payments: Payments) -> Self {
        Self { payments }
    }
}

fn payment_id_arg(payment_id: &str) -> Result<(), PaymentError> {
    let mut violations = Vec::new();
    check_uuid("payment_id", payment_id, &mut violations);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(PaymentError::InvalidArgument(violations))
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<GetPaymentResponse>, Status> {
        let payment_id = request.into_inner().payment_id;
        payment_id_arg(&payment_id)?;
        let current = self
            .payments
            .events()
            .load(&payment_id)
            .await?
            .ok_or(PaymentError::NotFound(payment_id))?;
        Ok(Response::new(GetPaymentResponse {
            payment: Some(current.payment),
        }))
    }

    async fn list_payments(
        &self,
        request: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Vec::new();
        let size = paging::size(request.page_size, &mut violations);
        if !request.order_id.is_empty() {
            check_uuid("order_id", &request.order_id, &mut violations);
        }
        let customer = paging::owner_filter("customer_id", &request.customer_id, &mut violations);
        let filters = paging::filters(&[&request.order_id, &request.customer_id]);
        let from = paging::start(&request.page_token, &filters, &mut violations);
        if !violations.is_empty() {
            return Err(PaymentError::InvalidArgument(violations).into());
        }
        let events = self.payments.events();
        if !request.order_id.is_empty() {
            // An order has at most one payment, whose id follows from the
            // order's: one read, one page, no token.
            let payment_id = payment_id_for(&request.order_id).to_string();
            let found = match customer {
                Some(customer) => events.load_owned(customer, &payment_id).await?,
                None => events.load(&payment_id).await?,
            };
            return Ok(Response::new(ListPaymentsResponse {
                payments: found.map(|c| c.payment).into_iter().collect(),
                next_page_token: String::new(),
            }));
        }
        let page = events.list(customer, from, size).await?;
        Ok(Response::new(ListPaymentsResponse {
            payments: page.items,
            next_page_token: paging::next_token(&filters, page.next),
        }))
    }

    async fn refund_payment(
        &self,
        request: Request<RefundPaymentRequest>,
    ) -> Result<Response<RefundPaymentResponse>, Status> {
        let payment_id = request.into_inner().payment_id;
        payment_id_arg(&payment_id)?;
        let payment = self.payments.refund_payment(&payment_id).await?;
        Ok(Response::new(RefundPaymentResponse {
            payment: Some(payment),
        }))
    }
}
