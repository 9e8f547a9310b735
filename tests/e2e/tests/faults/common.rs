//! What the fault tests share: the timing bounds, a concurrent load of
//! CreateOrder callers, the checks that every order settled once and nothing
//! was dead-lettered, and the gateways that count or fail their calls.

use super::*;

/// Messages held by a process that died come back after 2 s, not 30 s.
pub(crate) const FAST_ACK_WAIT: (&str, &str) = ("CONSUMER_ACK_WAIT_SECS", "2");

/// The deadline every caller of the load sets on CreateOrder.
pub(crate) const CALL_DEADLINE: Duration = Duration::from_secs(3);

/// How long every order may take to settle once the fault is over.
pub(crate) const SETTLE: Duration = Duration::from_secs(60);

/// The deadline of the calls made while the broker is down: well below the
/// service's own 5 s bound on waiting for JetStream, so a call that ends in
/// time was ended by the caller's deadline.
pub(crate) const DOWN_DEADLINE: Duration = Duration::from_secs(1);

/// How late after [`DOWN_DEADLINE`] such a call may end: generous for a
/// loaded 2-core machine, and still 2 s short of the service's own 5 s.
pub(crate) const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// A lazily connected channel to `endpoint`.
pub(crate) fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .connect_lazy()
}

/// Concurrent CreateOrder callers, each with a deadline of [`CALL_DEADLINE`],
/// keeping the ids of the orders whose creation was acknowledged.
pub(crate) struct Load {
    pub(crate) stop: CancellationToken,
    pub(crate) acked: Arc<Mutex<Vec<String>>>,
    pub(crate) failed: Arc<AtomicU64>,
    pub(crate) callers: JoinSet<()>,
}

impl Load {
    /// Starts `callers` loops, spread over the order service `endpoints`.
    pub(crate) fn start(tag: &str, endpoints: &[String], callers: usize) -> Load {
        let stop = CancellationToken::new();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for caller in 0..callers {
            let mut client = OrderServiceClient::new(channel(&endpoints[caller % endpoints.len()]));
            let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
            let customer = format!("c-{tag}-{caller}");
            let tag = tag.to_owned();
            tasks.spawn(async move {
                let mut i = 0;
                while !stop.is_cancelled() {
                    i += 1;
                    let mut request = tonic::Request::new(order_request(
                        &customer,
                        1,
                        3,
                        &format!("r-{tag}-{caller}-{i}"),
                    ));
                    request.set_timeout(CALL_DEADLINE);
                    match client.create_order(request).await {
                        Ok(response) => acked
                            .lock()
                            .unwrap()
                            .push(response.into_inner().order.unwrap().order_id),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            // Pace a caller whose calls fail at once (the
                            // broker is down), instead of spinning.
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                            }
                        }
                    }
                }
            });
        }
        Load {
            stop,
            acked,
            failed,
            callers: tasks,
        }
    }

    /// How many creations were acknowledged so far.
    pub(crate) fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `count` creations in all were acknowledged.
    pub(crate) async fn until_acked(&self, count: usize, why: &str) {
        wait_until(
            &format!("{count} acknowledged orders ({why})"),
            Duration::from_secs(30),
            || async { self.acked() >= count },
        )
        .await;
    }

    /// Stops the callers (letting calls in flight finish) and returns the
    /// acknowledged order ids.
    pub(crate) async fn stop(mut self) -> Vec<String> {
        self.stop.cancel();
        while let Some(done) = self.callers.join_next().await {
            done.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        eprintln!(
            "load: {} orders acknowledged, {} calls failed",
            acked.len(),
            self.failed.load(Ordering::Relaxed)
        );
        acked
    }
}

/// The status a health service reports, or the call's error code.
pub(crate) async fn health(endpoint: &str, service: &str) -> Result<i32, Code> {
    HealthClient::new(channel(endpoint))
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

/// Waits until every order in `ids` is CONFIRMED, asking `endpoint`.
pub(crate) async fn wait_all_confirmed(endpoint: &str, ids: &[String]) {
    let client = OrderServiceClient::new(channel(endpoint));
    // Orders not seen CONFIRMED yet; each check asks only about those.
    let left = Mutex::new(ids.to_vec());
    wait_until(
        &format!("all {} acknowledged orders to be CONFIRMED", ids.len()),
        SETTLE,
        || async {
            let pending = left.lock().unwrap().clone();
            let mut still = Vec::new();
            for order_id in pending {
                let confirmed = client
                    .clone()
                    .get_order(GetOrderRequest {
                        order_id: order_id.clone(),
                    })
                    .await
                    .is_ok_and(|r| {
                        r.into_inner()
                            .order
                            .is_some_and(|o| o.status == OrderStatus::Confirmed as i32)
                    });
                if !confirmed {
                    still.push(order_id);
                }
            }
            let done = still.is_empty();
            *left.lock().unwrap() = still;
            done
        },
    )
    .await;
}

/// The messages of `stream` whose `ce-type` is `T`.
pub(crate) async fn events_of<T: Name>(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<StoredMessage> {
    read_all(js, stream, ">")
        .await
        .into_iter()
        .filter(|m| m.header("ce-type").as_deref() == Some(T::full_name().as_str()))
        .collect()
}

/// How many `PaymentAuthorized` events each order has in `PAYMENTS`.
pub(crate) async fn authorizations(js: &async_nats::jetstream::Context) -> HashMap<String, usize> {
    let mut per_order = HashMap::new();
    for event in events_of::<PaymentAuthorized>(js, "PAYMENTS").await {
        let order_id = PaymentAuthorized::decode(event.payload.as_slice())
            .unwrap()
            .payment
            .unwrap()
            .order_id;
        *per_order.entry(order_id).or_insert(0) += 1;
    }
    per_order
}

/// Asserts that every order in `ids` has exactly one `PaymentAuthorized`,
/// and that no order at all has more than one.
pub(crate) async fn assert_each_paid_exactly_once(
    js: &async_nats::jetstream::Context,
    ids: &[String],
) {
    let per_order = authorizations(js).await;
    for order_id in ids {
        assert_eq!(
            per_order.get(order_id).copied().unwrap_or(0),
            1,
            "exactly one PaymentAuthorized for acknowledged order {order_id}"
        );
    }
    let doubled: Vec<_> = per_order.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "orders paid twice: {doubled:?}");
    assert!(
        events_of::<PaymentDeclined>(js, "PAYMENTS")
            .await
            .is_empty(),
        "no payment was declined"
    );
}

/// Asserts that nothing was dead-lettered: every message was handled.
pub(crate) async fn assert_no_dead_letters(js: &async_nats::jetstream::Context) {
    let dead = read_all(js, "DEADLETTERS", ">").await;
    let reasons: Vec<_> = dead
        .iter()
        .map(|m| {
            (
                m.header(headers::ORIGINAL_SUBJECT),
                m.header(headers::DEAD_LETTER_REASON),
            )
        })
        .collect();
    assert!(dead.is_empty(), "messages were dead-lettered: {reasons:?}");
}

/// Messages of durable `durable` delivered and not yet acknowledged
/// (0 while the consumer does not exist yet).
pub(crate) async fn ack_pending(
    js: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
) -> usize {
    match js.get_stream(stream).await {
        Ok(stream) => stream
            .consumer_info(durable)
            .await
            .map_or(0, |info| info.num_ack_pending),
        Err(_) => 0,
    }
}

/// A payment gateway that counts the calls of one replica and hands them to
/// a gateway all replicas share, so idempotency keys are honoured across
/// replicas as a real gateway would.
#[derive(Clone)]
pub(crate) struct CountingGateway {
    pub(crate) shared: SimulatedGateway,
    pub(crate) calls: Arc<AtomicU64>,
}

impl tower::Service<GatewayRequest> for CountingGateway {
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = <SimulatedGateway as tower::Service<GatewayRequest>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.shared.poll_ready(cx)
    }

    fn call(&mut self, request: GatewayRequest) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.shared.call(request)
    }
}

/// A gateway in front of a shared simulator that can be taken down: while
/// down, every call fails at once with a transient error (and is counted).
#[derive(Clone)]
pub(crate) struct SwitchableGateway {
    pub(crate) shared: SimulatedGateway,
    pub(crate) down: Arc<AtomicBool>,
    pub(crate) refused: Arc<AtomicU64>,
}

impl tower::Service<GatewayRequest> for SwitchableGateway {
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = <SimulatedGateway as tower::Service<GatewayRequest>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.shared.poll_ready(cx)
    }

    fn call(&mut self, request: GatewayRequest) -> Self::Future {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async {
                Err(GatewayError::Transient(String::from("gateway outage")))
            });
        }
        self.shared.call(request)
    }
}

/// A simulated gateway that fails half its calls and answers in 20 ms.
pub(crate) fn flaky_gateway() -> SimulatedGateway {
    SimulatedGateway::new(SimulatorConfig {
        decline_above_units: 10_000,
        latency: Duration::from_millis(20),
        failure_rate: 0.5,
    })
}

/// Resilience settings that trip the breaker on a gateway failing half its
/// calls: it opens on the first call whose three attempts all failed (one
/// call in eight) and lets a probe through after 200 ms.
///
/// Three attempts, not one: with one attempt per delivery, one order in
/// 1024 fails all ten of its deliveries at a failure rate of one half, and
/// is dead-lettered as designed (`max_deliver`). With three, that is one in
/// 10^9, so "every order completes" holds for the test's few dozen orders.
pub(crate) const TRIPPING_BREAKER: [(&str, &str); 3] = [
    ("GATEWAY_MAX_ATTEMPTS", "3"),
    ("GATEWAY_BREAKER_FAILURES", "1"),
    ("GATEWAY_BREAKER_OPEN_MS", "200"),
];
