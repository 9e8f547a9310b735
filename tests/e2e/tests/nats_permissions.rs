//! Least privilege on NATS: a real `nats-server` runs the users and
//! permissions of `deploy/nats/auth.conf` as they are shipped, and the real
//! service binaries connect with their own users.
//!
//! Shown here: the whole saga and every read path work with those
//! permissions and no other (no permission violation is logged except the
//! one provoked on purpose); a payment event published with the order
//! service's credentials is refused and never stored, and the reverse; a
//! wrong password stops start-up with a message naming the variables; a
//! service logs in over mutual TLS, and is refused without its client
//! certificate; and no password ever appears in a log line.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use futures_util::StreamExt;
use order_service::domain::{NewOrder, RawLine};
use orderflow_e2e::services::{order_request, wait_for_status};
use orderflow_proto::{
    Name,
    admin::v1::{
        ListDeadLettersRequest, ReplayDeadLetterRequest,
        dead_letter_service_client::DeadLetterServiceClient,
    },
    contract::STREAMS,
    order::v1::{
        CancelOrderRequest, GetOrderRequest, ListOrdersRequest, OrderCreated, OrderStatus,
        WatchOrderRequest, order_service_client::OrderServiceClient,
    },
    payment::v1::{
        GetPaymentRequest, ListPaymentsRequest, Payment, PaymentAuthorized, PaymentStatus,
        payment_service_client::PaymentServiceClient,
    },
};
use orderflow_testkit::{
    NatsServer,
    process::{ServiceProcess, workspace_binary},
    wait_until,
};
use prost::Message;
use tempfile::TempDir;

/// The durable consumers of both services, by stream.
const DURABLES: [(&str, &str); 2] = [
    ("PAYMENTS", "order-service-payments"),
    ("ORDERS", "payment-service-orders"),
];

/// A nats-server running `deploy/nats/auth.conf`, with a fresh password
/// per user, and the password files the services read.
struct SecuredNats {
    server: NatsServer,
    order_password: String,
    payment_password: String,
    ops_password: String,
    files: TempDir,
}

impl SecuredNats {
    fn start() -> Self {
        // Distinctive values, so a leak into a log is found by a plain search.
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let order_password = format!("order-pw-{nonce:x}-Zq");
        let payment_password = format!("payment-pw-{nonce:x}-Zq");
        let ops_password = format!("ops-pw-{nonce:x}-Zq");
        let config = std::fs::read_to_string(deploy_file("nats/auth.conf"))
            .expect("deploy/nats/auth.conf is readable");
        let server = NatsServer::start_with_config(
            &config,
            &[
                ("ORDER_SERVICE_NATS_PASSWORD", &order_password),
                ("PAYMENT_SERVICE_NATS_PASSWORD", &payment_password),
                ("OPS_NATS_PASSWORD", &ops_password),
            ],
        );
        let files = tempfile::tempdir().unwrap();
        for (name, value) in [
            ("order-service", &order_password),
            ("payment-service", &payment_password),
            ("wrong", &format!("wrong-pw-{nonce:x}-Zq")),
        ] {
            // As a mounted Secret often is: with a trailing newline.
            std::fs::write(files.path().join(name), format!("{value}\n")).unwrap();
        }
        Self {
            server,
            order_password,
            payment_password,
            ops_password,
            files,
        }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn password_file(&self, name: &str) -> String {
        self.files.path().join(name).display().to_string()
    }

    /// Every secret of this setup, for leak checks.
    fn secrets(&self) -> [&str; 3] {
        [
            &self.order_password,
            &self.payment_password,
            &self.ops_password,
        ]
    }

    /// Starts a service binary as its own NATS user, logging at debug
    /// (async-nats at trace) so that the leak check sees the most.
    async fn start_service(&self, name: &str) -> ServiceProcess {
        let file = self.password_file(name);
        ServiceProcess::start(
            &workspace_binary(name),
            &self.url(),
            &[
                ("NATS_USER", name),
                ("NATS_PASSWORD_FILE", &file),
                ("RUST_LOG", "debug,async_nats=trace,h2=info,hyper=info"),
            ],
        )
        .await
    }

    /// A JetStream context as `user`, and the server errors its connection
    /// receives (permission violations).
    async fn connect_as(&self, user: &str, password: &str) -> (jetstream::Context, ServerErrors) {
        let errors = ServerErrors::default();
        let sink = errors.clone();
        let client = async_nats::ConnectOptions::with_user_and_password(
            user.to_owned(),
            password.to_owned(),
        )
        .custom_inbox_prefix(format!("_INBOX.{user}"))
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    sink.0.lock().unwrap().push(error.to_string());
                }
            }
        })
        .connect(self.url())
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(client);
        (js, errors)
    }

    async fn ops(&self) -> jetstream::Context {
        self.connect_as("ops", &self.ops_password).await.0
    }
}

/// The server errors a test connection received.
#[derive(Clone, Default)]
struct ServerErrors(Arc<Mutex<Vec<String>>>);

impl ServerErrors {
    /// Waits for a permission violation of exactly `subject`.
    async fn wait_for_violation(&self, subject: &str) {
        let quoted = format!("{subject:?}");
        wait_until(
            &format!("a permissions violation for {subject}"),
            Duration::from_secs(5),
            || async {
                self.0
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|e| e.contains("Permissions Violation") && e.contains(&quoted))
            },
        )
        .await;
    }
}

/// How long a child that exits by itself (a refused start-up, `--help`,
/// `nats-server -t`) may run. They exit within a second; this is reached
/// only when the feature under test is broken, and then the test fails
/// instead of stalling CI.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `command` to its exit with its output captured, for at most
/// `limit`. A child still running then is killed, and the test fails with
/// what it printed so far.
///
/// The output goes to files rather than pipes so that nothing it printed is
/// lost with a read cut short by the timeout.
async fn output_within(command: Command, limit: Duration) -> Output {
    let shown = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let stdout = tempfile::NamedTempFile::new().expect("a temporary file for the child's stdout");
    let stderr = tempfile::NamedTempFile::new().expect("a temporary file for the child's stderr");
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(Stdio::null())
        .stdout(stdout.reopen().expect("the stdout file opens for writing"))
        .stderr(stderr.reopen().expect("the stderr file opens for writing"))
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{shown} does not start: {e}"));
    let read = |file: &tempfile::NamedTempFile| std::fs::read(file.path()).unwrap_or_default();
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => Output {
            status: status.unwrap_or_else(|e| panic!("cannot wait for {shown}: {e}")),
            stdout: read(&stdout),
            stderr: read(&stderr),
        },
        Err(_) => {
            // Killed and reaped first, so that the files are complete.
            let killed = child.kill().await;
            panic!(
                "{shown} did not exit within {limit:?} (killed: {killed:?}); it printed so far:\n\
                 --- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&read(&stdout)),
                String::from_utf8_lossy(&read(&stderr)),
            );
        }
    }
}

fn deploy_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

/// Headers of a well-formed payment event, as the payment service writes.
fn event_headers(ce_type: &str, id: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    headers.insert("ce-specversion", "1.0");
    headers.insert("ce-id", id);
    headers.insert("ce-source", "forged");
    headers.insert("ce-type", ce_type);
    headers.insert("ce-time", "2025-01-01T00:00:00Z");
    headers.insert("content-type", "application/protobuf");
    headers
}

/// The id the order service gives `request`.
fn order_id_of(customer: &str, quantity: i32, units: i64, request_id: &str) -> String {
    NewOrder::parse(
        customer,
        &[RawLine {
            sku: "SKU-1",
            quantity,
            unit_price: Some(("EUR", units, 0)),
        }],
        request_id,
    )
    .unwrap()
    .order_id()
    .to_string()
}

/// Publishes `payload` on `subject` through JetStream and reports whether
/// the stream acknowledged it.
async fn publish_acked(
    js: &jetstream::Context,
    subject: &str,
    headers: async_nats::HeaderMap,
    payload: Vec<u8>,
) -> bool {
    match js
        .publish_with_headers(subject.to_owned(), headers, payload.into())
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    }
}

/// Whether stream `stream` holds a message on `subject`, read as ops.
async fn stored(ops: &jetstream::Context, stream: &str, subject: &str) -> bool {
    let stream = ops.get_stream(stream).await.unwrap();
    match stream.direct_get_last_for_subject(subject).await {
        Ok(_) => true,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => false,
        Err(e) => panic!("cannot read {subject}: {e}"),
    }
}

/// Every line of `log` that reports a permission violation.
fn violations(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("Permissions Violation"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_do_all_their_work_with_only_their_own_nats_permissions() {
    let nats = SecuredNats::start();
    let mut orders_process = nats.start_service("order-service").await;
    let mut payments_process = nats.start_service("payment-service").await;
    let mut orders = OrderServiceClient::connect(orders_process.endpoint())
        .await
        .unwrap();
    let mut payments = PaymentServiceClient::connect(payments_process.endpoint())
        .await
        .unwrap();
    let mut order_admin = DeadLetterServiceClient::connect(orders_process.endpoint())
        .await
        .unwrap();
    let mut payment_admin = DeadLetterServiceClient::connect(payments_process.endpoint())
        .await
        .unwrap();

    // The saga: created, charged, confirmed. Then every read path.
    let order = orders
        .create_order(order_request("c-perm", 2, 12, "r-perm"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let mut watch = orders
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("WatchOrder answers")
        .expect("WatchOrder streams")
        .unwrap();
    assert_eq!(first.order.unwrap().order_id, order.order_id);
    drop(watch);
    let confirmed = wait_for_status(&orders, &order.order_id, OrderStatus::Confirmed).await;
    let got = orders
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(got.status, OrderStatus::Confirmed as i32);
    wait_until("the order in ListOrders", Duration::from_secs(20), || {
        let mut orders = orders.clone();
        let order_id = order.order_id.clone();
        async move {
            orders
                .list_orders(ListOrdersRequest {
                    customer_id: "c-perm".into(),
                    ..Default::default()
                })
                .await
                .is_ok_and(|r| {
                    r.into_inner().orders.iter().any(|o| {
                        o.order_id == order_id && o.status == OrderStatus::Confirmed as i32
                    })
                })
        }
    })
    .await;
    let payment = payments
        .get_payment(GetPaymentRequest {
            payment_id: confirmed.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(payment.order_id, order.order_id);
    wait_until(
        "the payment in ListPayments",
        Duration::from_secs(20),
        || {
            let mut payments = payments.clone();
            let order_id = order.order_id.clone();
            async move {
                payments
                    .list_payments(ListPaymentsRequest {
                        order_id,
                        ..Default::default()
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().payments.len() == 1)
            }
        },
    )
    .await;

    // Cancelling a paid order: the payment service refunds it.
    orders
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap();
    wait_until("the refund", Duration::from_secs(20), || {
        let mut payments = payments.clone();
        let payment_id = confirmed.payment_id.clone();
        async move {
            payments
                .get_payment(GetPaymentRequest { payment_id })
                .await
                .is_ok_and(|r| {
                    r.into_inner()
                        .payment
                        .is_some_and(|p| p.status == PaymentStatus::Refunded as i32)
                })
        }
    })
    .await;

    // Dead letters: a payment result for an order that does not exist
    // (published by ops, who may) is dead-lettered by the order service.
    let ops = nats.ops().await;
    let order_id = order_id_of("c-dl", 1, 3, "r-dl");
    let payment_id = "6f1c5a52-4a1c-5b2b-9d7e-0d1f2e3a4b5d";
    let event = PaymentAuthorized {
        payment: Some(Payment {
            payment_id: payment_id.into(),
            order_id: order_id.clone(),
            customer_id: "c-dl".into(),
            status: PaymentStatus::Authorized as i32,
            version: 1,
            ..Default::default()
        }),
    };
    let subject = format!("payments.c-dl.{payment_id}.authorized");
    assert!(
        publish_acked(
            &ops,
            &subject,
            event_headers(
                &PaymentAuthorized::full_name(),
                &format!("{payment_id}.authorized")
            ),
            event.encode_to_vec(),
        )
        .await
    );
    let letter = Arc::new(Mutex::new(None));
    wait_until("the dead letter", Duration::from_secs(20), || {
        let mut admin = order_admin.clone();
        let letter = letter.clone();
        async move {
            let found = admin
                .list_dead_letters(ListDeadLettersRequest {
                    consumer: "order-service-payments".into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().dead_letters)
                .unwrap_or_default();
            let done = !found.is_empty();
            *letter.lock().unwrap() = found.into_iter().next();
            done
        }
    })
    .await;
    let letter = letter.lock().unwrap().take().unwrap();
    assert_eq!(letter.original_subject, subject);
    let listed_by_payments = payment_admin
        .list_dead_letters(ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert!(
        listed_by_payments
            .iter()
            .any(|l| l.sequence == letter.sequence)
    );

    // The order service may not publish payment subjects, so it cannot
    // replay this one; the payment service, which writes PAYMENTS, can.
    let refused = order_admin
        .replay_dead_letter(ReplayDeadLetterRequest {
            sequence: letter.sequence,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("permission"),
        "the refusal says why: {}",
        refused.message()
    );
    let replayed = payment_admin
        .replay_dead_letter(ReplayDeadLetterRequest {
            sequence: letter.sequence,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.replay_subject, format!("{subject}.replay"));
    // Delivered again to the order service, which still finds no such
    // order and dead-letters the replay: the original is gone.
    wait_until(
        "the replay to be dead-lettered",
        Duration::from_secs(20),
        || {
            let mut admin = order_admin.clone();
            let replay_subject = replayed.replay_subject.clone();
            async move {
                admin
                    .list_dead_letters(ListDeadLettersRequest::default())
                    .await
                    .is_ok_and(|r| {
                        let letters = r.into_inner().dead_letters;
                        letters.iter().all(|l| l.sequence != letter.sequence)
                            && letters.iter().any(|l| l.original_subject == replay_subject)
                    })
            }
        },
    )
    .await;

    // Every durable consumer caught up: the acks were all permitted.
    for (stream, durable) in DURABLES {
        wait_until(
            &format!("{durable} to ack everything"),
            Duration::from_secs(20),
            || async {
                let Ok(stream) = ops.get_stream(stream).await else {
                    return false;
                };
                stream
                    .consumer_info(durable)
                    .await
                    .is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0)
            },
        )
        .await;
    }

    // A clean stop drains through the same permissions.
    orders_process.terminate();
    payments_process.terminate();
    assert!(
        orders_process
            .wait_exit(Duration::from_secs(30))
            .await
            .success()
    );
    assert!(
        payments_process
            .wait_exit(Duration::from_secs(30))
            .await
            .success()
    );

    let order_log = orders_process.log();
    let payment_log = payments_process.log();
    // The only refusal is the replay provoked above: the permissions lack
    // nothing the services do.
    let order_violations = violations(&order_log);
    assert!(
        !order_violations.is_empty()
            && order_violations
                .iter()
                .all(|l| l.contains(&format!("{subject}.replay"))),
        "unexpected permission violations of the order service:\n{}",
        order_violations.join("\n")
    );
    assert!(
        violations(&payment_log).is_empty(),
        "permission violations of the payment service:\n{}",
        violations(&payment_log).join("\n")
    );
    // And no password anywhere in what they logged, at debug level.
    assert!(order_log.lines().count() > 20 && payment_log.lines().count() > 20);
    for secret in nats.secrets() {
        for (name, log) in [
            ("order-service", &order_log),
            ("payment-service", &payment_log),
        ] {
            if let Some(line) = log.lines().find(|l| l.contains(secret)) {
                panic!("{name} logged a password: {line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_event_sent_with_the_order_services_credentials_is_refused_and_the_reverse() {
    let nats = SecuredNats::start();
    let ops = nats.ops().await;
    orderflow_eventbus::ensure_streams(&ops, STREAMS, 1)
        .await
        .unwrap();
    let (as_orders, order_errors) = nats.connect_as("order-service", &nats.order_password).await;
    let (as_payments, payment_errors) = nats
        .connect_as("payment-service", &nats.payment_password)
        .await;

    // A forged PaymentAuthorized, well-formed in every header, from the
    // order service: refused by the server, never stored.
    let payment_id = "0d2a6f3c-1b5e-4c7d-8e9f-a0b1c2d3e4f5";
    let forged = PaymentAuthorized {
        payment: Some(Payment {
            payment_id: payment_id.into(),
            order_id: "7e57-order".into(),
            status: PaymentStatus::Authorized as i32,
            version: 1,
            ..Default::default()
        }),
    };
    let subject = format!("payments.c-forged.{payment_id}.authorized");
    let headers = event_headers(
        &PaymentAuthorized::full_name(),
        &format!("{payment_id}.authorized"),
    );
    assert!(
        !publish_acked(
            &as_orders,
            &subject,
            headers.clone(),
            forged.encode_to_vec()
        )
        .await,
        "JetStream acknowledged a payment event from the order service"
    );
    order_errors.wait_for_violation(&subject).await;
    assert!(!stored(&ops, "PAYMENTS", &subject).await);
    // Its own events are accepted: the refusal is about the subject.
    let own = "orders.c-own.0d2a6f3c-1b5e-4c7d-8e9f-000000000001.created";
    assert!(
        publish_acked(
            &as_orders,
            own,
            event_headers(&OrderCreated::full_name(), "own-order"),
            Vec::new()
        )
        .await
    );
    assert!(stored(&ops, "ORDERS", own).await);

    // The reverse: an order event from the payment service.
    let forged_order = "orders.c-forged.0d2a6f3c-1b5e-4c7d-8e9f-000000000002.created";
    assert!(
        !publish_acked(
            &as_payments,
            forged_order,
            event_headers(&OrderCreated::full_name(), "forged-order"),
            Vec::new()
        )
        .await,
        "JetStream acknowledged an order event from the payment service"
    );
    payment_errors.wait_for_violation(forged_order).await;
    assert!(!stored(&ops, "ORDERS", forged_order).await);
    assert!(publish_acked(&as_payments, &subject, headers, forged.encode_to_vec()).await);
    assert!(stored(&ops, "PAYMENTS", &subject).await);

    // Nor may a service change the other's durable consumer (by name, or
    // through the unnamed creation subject whose request names it), take
    // its messages, read its replies, or delete a stream.
    let hijack = r#"{"stream_name":"ORDERS","config":{"name":"payment-service-orders","ack_policy":"explicit","filter_subjects":["orders.none"]}}"#;
    for subject in [
        "$JS.API.CONSUMER.CREATE.ORDERS",
        "$JS.API.CONSUMER.CREATE.ORDERS.payment-service-orders",
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.payment-service-orders",
    ] {
        let _ = as_orders.client().publish(subject, hijack.into()).await;
        order_errors.wait_for_violation(subject).await;
    }
    let _ = as_orders
        .client()
        .subscribe("_INBOX.payment-service.>")
        .await;
    order_errors
        .wait_for_violation("_INBOX.payment-service.>")
        .await;
    assert!(as_payments.delete_stream("ORDERS").await.is_err());
    payment_errors
        .wait_for_violation("$JS.API.STREAM.DELETE.ORDERS")
        .await;
    assert!(ops.get_stream("ORDERS").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_start_up_with_exit_code_1_and_is_never_printed() {
    let nats = SecuredNats::start();
    let wrong_file = nats.password_file("wrong");
    let wrong = std::fs::read_to_string(&wrong_file).unwrap();
    let mut command = Command::new(workspace_binary("order-service"));
    command
        .env_clear()
        .env("NATS_URL", nats.url())
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("NATS_USER", "order-service")
        .env("NATS_PASSWORD_FILE", wrong_file)
        .env("RUST_LOG", "trace")
        .current_dir(std::env::temp_dir());
    let out = output_within(command, CHILD_TIMEOUT).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("refused this service's credentials") && text.contains("NATS_PASSWORD_FILE"),
        "the error says what to check: {text}"
    );
    assert!(
        !text.contains(wrong.trim()),
        "the wrong password was printed"
    );
    for secret in nats.secrets() {
        assert!(!text.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_logs_in_over_mutual_tls_and_without_a_client_certificate_is_refused() {
    let pki = orderflow_testkit::pki::TestPki::generate();
    let tls = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
        pki.server.cert_file.display().to_string(),
        pki.server.key_file.display().to_string(),
        pki.ca_file.display().to_string(),
    );
    let auth = std::fs::read_to_string(deploy_file("nats/auth.conf")).unwrap();
    let password_dir = tempfile::tempdir().unwrap();
    let password_file = password_dir.path().join("password");
    std::fs::write(&password_file, "tls-order-pw").unwrap();
    let nats = NatsServer::start_with_config(
        &format!("{tls}{auth}"),
        &[
            ("ORDER_SERVICE_NATS_PASSWORD", "tls-order-pw"),
            ("PAYMENT_SERVICE_NATS_PASSWORD", "unused"),
            ("OPS_NATS_PASSWORD", "unused"),
        ],
    );
    let url = nats.url().replace("nats://", "tls://");
    let password_file = password_file.display().to_string();
    let ca = pki.ca_file.display().to_string();
    let cert = pki.client.cert_file.display().to_string();
    let key = pki.client.key_file.display().to_string();
    let login = [
        ("NATS_USER", "order-service"),
        ("NATS_PASSWORD_FILE", password_file.as_str()),
        ("NATS_TLS_CA_FILE", ca.as_str()),
    ];
    let owned_login: Vec<(String, String)> = login
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();

    let mut with_cert = login.to_vec();
    with_cert.extend([
        ("NATS_TLS_CERT_FILE", cert.as_str()),
        ("NATS_TLS_KEY_FILE", key.as_str()),
    ]);
    let service = ServiceProcess::start(&workspace_binary("order-service"), &url, &with_cert).await;
    let mut orders = OrderServiceClient::connect(service.endpoint())
        .await
        .unwrap();
    orders
        .create_order(order_request("c-tls", 1, 5, "r-tls"))
        .await
        .unwrap();
    drop(service);

    let mut command = Command::new(workspace_binary("order-service"));
    command
        .env_clear()
        .env("NATS_URL", url)
        .env("GRPC_ADDR", "127.0.0.1:0")
        .envs(owned_login)
        .current_dir(std::env::temp_dir());
    let out = output_within(command, CHILD_TIMEOUT).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a client without a certificate was let in: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CertificateRequired"),
        "refused for its missing certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn help_lists_the_nats_credentials_without_any_secret_default() {
    for binary in ["order-service", "payment-service"] {
        let mut command = Command::new(workspace_binary(binary));
        command
            .arg("--help")
            .env_clear()
            .env("NATS_PASSWORD", "hunter2-from-env");
        let out = output_within(command, CHILD_TIMEOUT).await;
        let help = String::from_utf8_lossy(&out.stdout);
        for var in [
            "NATS_USER",
            "NATS_PASSWORD_FILE",
            "NATS_TOKEN_FILE",
            "NATS_NKEY_SEED_FILE",
            "NATS_CREDS_FILE",
            "NATS_TLS_CA_FILE",
        ] {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{var} ")))
                .unwrap_or_else(|| panic!("{binary} --help does not list {var}:\n{help}"));
            assert!(!line.contains("[default:"), "{line}");
        }
        assert!(!help.contains("hunter2"));
    }
}

#[tokio::test]
async fn the_deploy_nats_configuration_is_valid() {
    let mut command = Command::new("nats-server");
    command
        .args(["-t", "-c"])
        .arg(deploy_file("nats/nats-server.conf"))
        .envs([
            ("ORDER_SERVICE_NATS_PASSWORD", "a"),
            ("PAYMENT_SERVICE_NATS_PASSWORD", "b"),
            ("OPS_NATS_PASSWORD", "c"),
        ]);
    let out = output_within(command, CHILD_TIMEOUT).await;
    assert!(
        out.status.success(),
        "nats-server -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
