//! The saga through an external gateway: payment-service with `GATEWAY_URL`
//! pointing at a real gateway-sim on loopback HTTP, judged by the
//! gateway's own ledger, as a checker outside the system would.

use orderflow_e2e::services::{spawn_payment_service_from_env, traced};
use orderflow_gateway_sim::{
    Running, Settings,
    knobs::{Knobs, Outage},
    ledger::{Entry, Operation, Outcome},
};

use super::*;

/// The caller's trace, which the gateway's ledger must show.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn gateway_sim(dir: &std::path::Path) -> Running {
    let settings = Settings {
        data_dir: dir.to_owned(),
        knobs: Knobs::default(),
        seed: 14,
    };
    Running::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn charges(entries: &[Entry]) -> Vec<&Entry> {
    entries
        .iter()
        .filter(|e| e.operation == Operation::Charge)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_charged_once_at_the_http_gateway_and_refunded_on_cancel() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_sim(dir.path()).await;
    let orders = spawn_order_service(&nats.url()).await;
    let url = gateway.url();
    let payments = spawn_payment_service_from_env(&nats.url(), &[("GATEWAY_URL", &url)]).await;
    let mut client = order_client(&orders).await;
    let mut pay = payment_client(&payments).await;

    // 3 × 7.25 EUR = 21.75 EUR, 2175 cents.
    let mut request = order_request("c-gw-1", 3, 7, "r-http-gateway");
    request.items[0].unit_price.as_mut().unwrap().nanos = 250_000_000;
    let order = client
        .create_order(traced(request, TRACE_ID, "00f067aa0ba902b7"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let confirmed = wait_for_status(&client, &order.order_id, OrderStatus::Confirmed).await;

    let entries = gateway.entries();
    assert_eq!(
        entries.len(),
        1,
        "one operation at the gateway: {entries:?}"
    );
    let charge = &entries[0];
    assert_eq!(charge.operation, Operation::Charge);
    assert_eq!(charge.outcome, Outcome::Succeeded);
    assert_eq!(charge.idempotency_key, format!("charge:{}", order.order_id));
    assert_eq!(
        (charge.amount_minor, charge.currency.as_str()),
        (2175, "EUR")
    );
    let traceparent = charge.traceparent.as_deref().unwrap_or_default();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")),
        "the gateway call continues the caller's trace: {traceparent:?}"
    );
    let payment = pay
        .get_payment(GetPaymentRequest {
            payment_id: confirmed.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(
        payment.gateway_reference, charge.reference,
        "the charge belongs to the payment"
    );

    client
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap();
    wait_until(
        "the refund at the gateway",
        Duration::from_secs(20),
        || async { gateway.entries().len() == 2 },
    )
    .await;
    let refund = &gateway.entries()[1];
    assert_eq!(refund.operation, Operation::Refund);
    assert_eq!(refund.outcome, Outcome::Succeeded);
    assert_eq!(refund.idempotency_key, format!("refund:{}", order.order_id));
    assert_eq!(refund.charge.as_deref(), Some(charge.reference.as_str()));
    assert_eq!(
        (refund.amount_minor, refund.currency.as_str()),
        (2175, "EUR")
    );
    wait_until("the payment refunded", Duration::from_secs(20), || {
        let mut pay = pay.clone();
        let payment_id = confirmed.payment_id.clone();
        async move {
            pay.get_payment(GetPaymentRequest { payment_id })
                .await
                .map(|r| r.into_inner().payment.unwrap().status == PaymentStatus::Refunded as i32)
                .unwrap_or(false)
        }
    })
    .await;
    assert_eq!(charges(&gateway.entries()).len(), 1, "charged once in all");

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_at_the_http_gateway_fails_the_order() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_sim(dir.path()).await;
    let orders = spawn_order_service(&nats.url()).await;
    let url = gateway.url();
    let payments = spawn_payment_service_from_env(&nats.url(), &[("GATEWAY_URL", &url)]).await;
    let mut client = order_client(&orders).await;

    // 2 × 5000.01 EUR: above the default limit of 1 000 000 cents.
    let mut request = order_request("c-gw-2", 2, 5000, "r-http-decline");
    request.items[0].unit_price.as_mut().unwrap().nanos = 10_000_000;
    let order = client
        .create_order(request)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let failed = wait_for_status(&client, &order.order_id, OrderStatus::PaymentFailed).await;
    assert!(
        failed.failure_reason.contains("above the limit"),
        "{}",
        failed.failure_reason
    );

    let entries = gateway.entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        entries[0].outcome,
        Outcome::Declined,
        "a decline is recorded"
    );
    assert_eq!(entries[0].amount_minor, 1_000_002);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

/// Found by the nemesis: a delivery charges, then dies before recording the
/// charge (here its answer is lost; a SIGKILL or an append the broker never
/// confirms does the same). The cancellation then finds no payment and
/// voids it. The redelivery of the creation must not take the void for "no
/// money moved": it asks the gateway again under the same key and refunds
/// the charge it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_lost_before_the_cancellation_voided_the_payment_is_refunded() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_sim(dir.path()).await;
    gateway.set_knobs(|knobs| knobs.lost_answer_rate = 1.0);
    let orders = spawn_order_service(&nats.url()).await;
    let url = gateway.url();
    let payments = spawn_payment_service_from_env(
        &nats.url(),
        &[
            ("GATEWAY_URL", &url),
            ("GATEWAY_MAX_ATTEMPTS", "1"),
            ("GATEWAY_BREAKER_FAILURES", "1000"),
        ],
    )
    .await;
    let mut client = order_client(&orders).await;
    let pay = payment_client(&payments).await;

    let order = client
        .create_order(order_request("c-gw-3", 1, 40, "r-http-lost"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    wait_until(
        "the charge at the gateway",
        Duration::from_secs(20),
        || async { charges(&gateway.entries()).len() == 1 },
    )
    .await;
    // From now on the gateway records nothing, so the creation keeps
    // failing while the cancellation voids the payment.
    gateway.set_knobs(|knobs| {
        knobs.outage = Outage::On;
        knobs.lost_answer_rate = 0.0;
    });
    client
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap();
    let payment_id = payment_service::domain::payment_id_for(&order.order_id).to_string();
    let status_is = |status: PaymentStatus| {
        let (pay, payment_id) = (pay.clone(), payment_id.clone());
        move || {
            let (mut pay, payment_id) = (pay.clone(), payment_id.clone());
            async move {
                pay.get_payment(GetPaymentRequest { payment_id })
                    .await
                    .ok()
                    .and_then(|r| r.into_inner().payment)
                    .is_some_and(|p| p.status == status as i32)
            }
        }
    };
    wait_until(
        "the payment voided by the cancellation",
        Duration::from_secs(30),
        status_is(PaymentStatus::Voided),
    )
    .await;
    gateway.set_knobs(|knobs| knobs.outage = Outage::Off);

    wait_until(
        "the lost charge refunded",
        Duration::from_secs(60),
        status_is(PaymentStatus::Refunded),
    )
    .await;
    let entries = gateway.entries();
    let charged = charges(&entries);
    assert_eq!(charged.len(), 1, "charged once in all: {entries:?}");
    let refunds: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.operation == Operation::Refund && e.outcome == Outcome::Succeeded)
        .collect();
    assert_eq!(refunds.len(), 1, "{entries:?}");
    assert_eq!(
        refunds[0].charge.as_deref(),
        Some(charged[0].reference.as_str())
    );
    let still = wait_for_status(&client, &order.order_id, OrderStatus::Cancelled).await;
    assert_eq!(still.status, OrderStatus::Cancelled as i32);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
    gateway.stop().await.unwrap();
}
