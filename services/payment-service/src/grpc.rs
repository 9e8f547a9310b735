//! The gRPC edge of the payment service.

use orderflow_platform::{
    paging,
    status::{check_token, check_uuid, page_size},
};
use orderflow_proto::payment::v1::{
    GetPaymentRequest, GetPaymentResponse, ListPaymentsRequest, ListPaymentsResponse,
    RefundPaymentRequest, RefundPaymentResponse, payment_service_server::PaymentService,
};
use tonic::{Request, Response, Status};

use crate::{error::PaymentError, orders::Payments, projection::PaymentViews};

/// Longest customer id accepted as a filter (as the order service accepts).
pub(crate) const MAX_ID_LEN: usize = 128;

/// The `orderflow.payment.v1.PaymentService` implementation.
#[derive(Clone)]
pub struct PaymentApi {
    payments: Payments,
    views: PaymentViews,
}

impl PaymentApi {
    /// The API over the payment operations and the list projection.
    pub fn new(payments: Payments, views: PaymentViews) -> Self {
        Self { payments, views }
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
        let size = page_size(
            request.page_size,
            paging::DEFAULT_PAGE_SIZE,
            paging::MAX_PAGE_SIZE,
            &mut violations,
        );
        if !request.order_id.is_empty() {
            check_uuid("order_id", &request.order_id, &mut violations);
        }
        check_token(
            "customer_id",
            &request.customer_id,
            MAX_ID_LEN,
            false,
            &mut violations,
        );
        let filters = format!("{}\u{1f}{}", request.order_id, request.customer_id);
        let after = paging::decode(&request.page_token, &filters).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        if !violations.is_empty() {
            return Err(PaymentError::InvalidArgument(violations).into());
        }
        let order = (!request.order_id.is_empty()).then_some(request.order_id.as_str());
        let customer = (!request.customer_id.is_empty()).then_some(request.customer_id.as_str());
        let page = self
            .views
            .list(order, customer, after.as_deref(), size)
            .await?;
        Ok(Response::new(ListPaymentsResponse {
            payments: page.payments,
            next_page_token: page
                .last
                .map(|last| paging::encode(&filters, &last))
                .unwrap_or_default(),
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
