//! The payment binary killed mid-work and restarted: every order is paid
//! exactly once, counted from the gateway charges each lifetime exported.

use super::*;

/// The variables of one lifetime of the payment binary: its spans go to
/// `receiver` (one receiver per lifetime, so each lifetime's gateway calls
/// are counted apart), every span is sampled whatever the caller's trace
/// flags, and the export queue holds all of them.
fn payment_binary_env(receiver: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![
        FAST_ACK_WAIT,
        ("SIM_LATENCY_MS", "50"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "16384"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .chain([("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())])
    .collect()
}

/// `env` as `ServiceProcess::start` takes it.
fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The idempotency keys of the gateway charges a payment binary exported to
/// `receiver`: its `gateway charge` spans whose outcome is `charged`. Each
/// lifetime of the binary has a simulator of its own, so a key repeated
/// within one lifetime is answered from that ledger and charges nothing
/// more: the distinct keys are the charges that lifetime made.
fn charge_keys(receiver: &OtlpReceiver) -> HashSet<String> {
    receiver
        .spans()
        .into_iter()
        .filter(|s| s.service == "payment-service" && s.name == "gateway charge")
        .filter(|s| {
            s.attributes
                .get("orderflow.gateway.outcome")
                .is_some_and(|o| o == "charged")
        })
        .map(|s| {
            s.attributes
                .get("orderflow.gateway.idempotency_key")
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// The order each key in `keys` charges, when it is `charge:<order_id>` of
/// an order in `paid`; the keys that are not go to the error.
fn charged_orders(
    keys: &HashSet<String>,
    paid: &HashSet<String>,
) -> Result<HashSet<String>, Vec<String>> {
    let (good, bad): (Vec<_>, Vec<_>) = keys.iter().partition(|key| {
        key.strip_prefix("charge:")
            .is_some_and(|order_id| paid.contains(order_id))
    });
    if bad.is_empty() {
        Ok(good
            .into_iter()
            .map(|key| key["charge:".len()..].to_owned())
            .collect())
    } else {
        Err(bad.into_iter().cloned().collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_binary_killed_mid_work_and_restarted_pays_every_order_exactly_once() {
    let nats = NatsServer::start_own();
    let binary = workspace_binary("payment-service");
    let orders = spawn_order_service_with(&nats.url(), &[FAST_ACK_WAIT]).await;
    let (killed_spans, restarted_spans) = (
        OtlpReceiver::start_grpc().await,
        OtlpReceiver::start_grpc().await,
    );
    let killed_env = payment_binary_env(&killed_spans);
    let mut payments = ServiceProcess::start(&binary, &nats.url(), &borrowed(&killed_env)).await;
    let js = jetstream(&nats.url()).await;
    let load = Load::start("pay-kill", &[orders.endpoint()], 4);
    wait_until(
        "the binary to have payments in flight and 20 charges exported",
        Duration::from_secs(20),
        || async {
            !authorizations(&js).await.is_empty()
                && charge_keys(&killed_spans).len() >= 20
                && ack_pending(&js, "ORDERS", "payment-service-orders").await > 0
        },
    )
    .await;

    payments.kill();
    let held = ack_pending(&js, "ORDERS", "payment-service-orders").await;
    assert!(held > 0, "the binary was killed holding work");
    load.until_acked(load.acked() + 20, "while the payment service is down")
        .await;

    // Only the payment service writes PAYMENTS, and it is down: what is
    // there now is what the killed binary recorded.
    let paid_before_restart: HashSet<String> = authorizations(&js).await.into_keys().collect();
    // A kill also loses the acks of work finished just before it, so
    // JetStream hands orders that are already paid to the restarted binary.
    // Whether this kill caught one between its payment event and its ack is
    // down to timing; copies of a few paid orders' OrderCreated, byte for
    // byte with their ce-id, make it certain. They go to the replay subject
    // of the original, where a repeat reaches the payment service without
    // becoming the order's latest event (a new Nats-Msg-Id only so the
    // stream stores them; the optimistic-concurrency headers stay behind, as
    // a redelivery is not checked again).
    let redelivered: Vec<String> = paid_before_restart.iter().take(5).cloned().collect();
    for order_id in &redelivered {
        let original = read_all(&js, "ORDERS", &format!("orders.*.{order_id}.*"))
            .await
            .into_iter()
            .find(|m| m.header("ce-type").as_deref() == Some(OrderCreated::full_name().as_str()))
            .expect("a paid order has its OrderCreated");
        let mut headers = original.redelivery_headers();
        headers.insert("Nats-Msg-Id", format!("lost-ack-{order_id}").as_str());
        js.publish_with_headers(
            format!("{}.replay", original.subject),
            headers,
            original.payload.clone().into(),
        )
        .await
        .expect("the copy is published")
        .await
        .expect("JetStream stores the copy");
    }

    let restarted_env = payment_binary_env(&restarted_spans);
    let mut payments = ServiceProcess::start(&binary, &nats.url(), &borrowed(&restarted_env)).await;
    load.until_acked(load.acked() + 20, "after the restart")
        .await;
    let acked = load.stop().await;

    wait_all_confirmed(&orders.endpoint(), &acked).await;
    wait_until(
        "the restarted binary to handle every order event, the copies too",
        SETTLE,
        || async {
            consumer_caught_up(&js, "ORDERS", "payment-service-orders").await
                && consumer_caught_up(&js, "ORDERS", "payment-service-orders-replays").await
        },
    )
    .await;
    assert_each_paid_exactly_once(&js, &acked).await;
    assert_no_dead_letters(&js).await;
    // SIGTERM exports every span the restarted binary still holds.
    payments.terminate();
    let status = payments.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "the restarted binary exits 0 on SIGTERM"
    );

    // The charges of each lifetime, by order. A SIGKILL loses the spans the
    // killed binary had not exported yet; each payment it recorded is a
    // charge it made, so those count as its charges too.
    let paid: HashSet<String> = authorizations(&js).await.into_keys().collect();
    let paid_after_restart: HashSet<String> =
        paid.difference(&paid_before_restart).cloned().collect();
    let by_restarted = charged_orders(&charge_keys(&restarted_spans), &paid).unwrap_or_else(|bad| {
        panic!("the restarted binary charged under keys that are no paid order's charge:<order_id>: {bad:?}")
    });
    let by_killed = charged_orders(&charge_keys(&killed_spans), &paid).unwrap_or_else(|bad| {
        panic!("the killed binary charged under keys that are no paid order's charge:<order_id>: {bad:?}")
    });
    let exported_by_killed = by_killed.len();
    let by_killed: HashSet<String> = by_killed.union(&paid_before_restart).cloned().collect();

    // The restarted binary charged what it recorded and nothing else: no
    // order the killed one had paid, the copies included.
    let charged_again: Vec<_> = by_restarted.intersection(&paid_before_restart).collect();
    assert!(
        charged_again.is_empty(),
        "the restarted binary charged orders paid before it started \
         (copies of {redelivered:?} were delivered to it): {charged_again:?}"
    );
    assert_eq!(
        by_restarted, paid_after_restart,
        "the restarted binary charged exactly the orders whose payment it recorded"
    );
    // An order charged in both lifetimes was charged by the killed binary,
    // which died before recording it; the restarted one charged it again
    // under the same key, charge:<order_id>, which a real gateway answers
    // with the first charge. Any other order was charged once.
    let recharged: Vec<_> = by_killed.intersection(&by_restarted).collect();
    eprintln!(
        "charges: {} by the killed binary ({exported_by_killed} seen in its spans), {} by the \
         restarted one, {} of them again under the same key (charged, not recorded, before \
         the kill), {} orders paid",
        by_killed.len(),
        by_restarted.len(),
        recharged.len(),
        paid.len()
    );
    assert_eq!(
        by_killed.len() + by_restarted.len(),
        paid.len() + recharged.len(),
        "one charge per paid order across both lifetimes, plus the charges the kill \
         left unrecorded, repeated under the same key: {recharged:?}"
    );

    orders.stop().await.unwrap();
}
