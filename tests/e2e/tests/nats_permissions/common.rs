//! What the permission tests share: a `nats-server` running
//! `deploy/nats/auth.conf` with fresh passwords, a reader of the server's
//! errors, children run to their exit with a timeout, and event helpers.

use super::*;

/// The durable consumers of both services, by stream.
pub(crate) const DURABLES: [(&str, &str); 6] = [
    ("PAYMENTS", "order-service-payments"),
    ("ORDERS", "order-service-deadlines"),
    ("ORDERS", "payment-service-orders"),
    ("ORDERS", "payment-service-cancellations"),
    ("ORDERS", "payment-service-payment-failures"),
    ("ORDERS", "payment-service-orders-replays"),
];

/// A nats-server running `deploy/nats/auth.conf`, with a fresh password
/// per user, and the password files the services read.
pub(crate) struct SecuredNats {
    pub(crate) server: NatsServer,
    pub(crate) order_password: String,
    pub(crate) payment_password: String,
    pub(crate) ops_password: String,
    pub(crate) reader_password: String,
    pub(crate) files: TempDir,
}

impl SecuredNats {
    pub(crate) fn start() -> Self {
        // Distinctive values, so a leak into a log is found by a plain search.
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let order_password = format!("order-pw-{nonce:x}-Zq");
        let payment_password = format!("payment-pw-{nonce:x}-Zq");
        let ops_password = format!("ops-pw-{nonce:x}-Zq");
        let reader_password = format!("reader-pw-{nonce:x}-Zq");
        let config = std::fs::read_to_string(deploy_file("nats/auth.conf"))
            .expect("deploy/nats/auth.conf is readable");
        let server = NatsServer::start_with_config(
            &config,
            &[
                ("ORDER_SERVICE_NATS_PASSWORD", &order_password),
                ("PAYMENT_SERVICE_NATS_PASSWORD", &payment_password),
                ("OPS_NATS_PASSWORD", &ops_password),
                ("EVENTS_READER_NATS_PASSWORD", &reader_password),
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
            reader_password,
            files,
        }
    }

    pub(crate) fn url(&self) -> String {
        self.server.url()
    }

    pub(crate) fn password_file(&self, name: &str) -> String {
        self.files.path().join(name).display().to_string()
    }

    /// Every secret of this setup, for leak checks.
    pub(crate) fn secrets(&self) -> [&str; 4] {
        [
            &self.order_password,
            &self.payment_password,
            &self.ops_password,
            &self.reader_password,
        ]
    }

    /// Starts a service binary as its own NATS user, logging at debug
    /// (async-nats at trace) so that the leak check sees the most.
    pub(crate) async fn start_service(&self, name: &str) -> ServiceProcess {
        self.start_service_with(name, &[]).await
    }

    /// [`SecuredNats::start_service`] with `extra` variables.
    pub(crate) async fn start_service_with(
        &self,
        name: &str,
        extra: &[(&str, &str)],
    ) -> ServiceProcess {
        let file = self.password_file(name);
        let mut env = vec![
            ("NATS_USER", name),
            ("NATS_PASSWORD_FILE", file.as_str()),
            ("RUST_LOG", "debug,async_nats=trace,h2=info,hyper=info"),
        ];
        env.extend_from_slice(extra);
        ServiceProcess::start(&workspace_binary(name), &self.url(), &env).await
    }

    /// A JetStream context as `user`, and the server errors its connection
    /// receives (permission violations).
    pub(crate) async fn connect_as(
        &self,
        user: &str,
        password: &str,
    ) -> (jetstream::Context, ServerErrors) {
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

    pub(crate) async fn ops(&self) -> jetstream::Context {
        self.connect_as("ops", &self.ops_password).await.0
    }
}

/// The server errors a test connection received.
#[derive(Clone, Default)]
pub(crate) struct ServerErrors(pub(crate) Arc<Mutex<Vec<String>>>);

impl ServerErrors {
    /// Waits for a permission violation of exactly `subject`.
    pub(crate) async fn wait_for_violation(&self, subject: &str) {
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
pub(crate) const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `command` to its exit with its output captured, for at most
/// `limit`. A child still running then is killed, and the test fails with
/// what it printed so far.
///
/// The output goes to files rather than pipes so that nothing it printed is
/// lost with a read cut short by the timeout.
pub(crate) async fn output_within(command: Command, limit: Duration) -> Output {
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

pub(crate) fn deploy_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

/// Headers of a well-formed payment event, as the payment service writes.
pub(crate) fn event_headers(ce_type: &str, id: &str) -> async_nats::HeaderMap {
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

/// Publishes `payload` on `subject` through JetStream and reports whether
/// the stream acknowledged it.
pub(crate) async fn publish_acked(
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
pub(crate) async fn stored(ops: &jetstream::Context, stream: &str, subject: &str) -> bool {
    let stream = ops.get_stream(stream).await.unwrap();
    match stream.direct_get_last_for_subject(subject).await {
        Ok(_) => true,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => false,
        Err(e) => panic!("cannot read {subject}: {e}"),
    }
}

/// Every line of `log` that reports a permission violation.
pub(crate) fn violations(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("Permissions Violation"))
        .collect()
}
