//! The table: one row per malformed (or boundary) request, with the code
//! and the exact violated fields it expects. The rows are kept per RPC in
//! their own modules; this one checks them all against both services.

use super::*;

/// One malformed (or boundary) request and the answer it must get.
pub(crate) struct Row {
    pub(crate) what: &'static str,
    pub(crate) call: Call,
    pub(crate) code: Code,
    /// For INVALID_ARGUMENT: the BadRequest field violations, in order.
    pub(crate) fields: Vec<String>,
    /// Whether `fields` are only the first ones named (a status names as
    /// many as fit in the trailers; see `status::MAX_VIOLATION_BYTES`).
    pub(crate) prefix: bool,
    /// A piece of the status message that must be there (empty: none).
    pub(crate) message: &'static str,
}

pub(crate) fn row(what: &'static str, call: Call, code: Code, fields: &[&str]) -> Row {
    Row {
        what,
        call,
        code,
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        prefix: false,
        message: "",
    }
}

pub(crate) fn invalid(what: &'static str, call: Call, fields: &[&str]) -> Row {
    row(what, call, Code::InvalidArgument, fields)
}

/// Every row, RPC by RPC.
fn rows() -> Vec<Row> {
    [
        super::create_order::rows(),
        super::order_ids::rows(),
        super::list_orders::rows(),
        super::payment_ids::rows(),
        super::list_payments::rows(),
        super::wire::rows(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Whether `answer` is what `row` expects; the mismatch otherwise.
pub(crate) fn check_row(row: &Row, answer: &Result<Option<Order>, Status>) -> Result<(), String> {
    let (code, fields, message) = match answer {
        Result::Ok(_) => (Code::Ok, Vec::new(), String::new()),
        Err(status) => (
            status.code(),
            violated_fields(status),
            status.message().to_owned(),
        ),
    };
    let fields_match = if row.prefix {
        fields.starts_with(&row.fields)
    } else {
        fields == row.fields
    };
    if code != row.code || !fields_match || !message.contains(row.message) {
        return Err(format!(
            "{} ({}): expected {:?} {:?}, got {code:?} {fields:?} {:?}",
            row.what,
            row.call.rpc(),
            row.code,
            row.fields,
            message.chars().take(300).collect::<String>()
        ));
    }
    if code == Code::InvalidArgument && message.is_empty() {
        return Err(format!("{}: INVALID_ARGUMENT without a message", row.what));
    }
    Result::Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_its_precise_status() {
    record_service_panics();
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
    let clients = Clients::connect(&orders, &payments).await;

    let table = rows();
    assert!(table.len() >= 20);
    for rpc in METHODS.iter().map(|(_, m, _)| *m) {
        assert!(
            table.iter().any(|r| r.call.rpc() == rpc),
            "the table has no row for {rpc}"
        );
    }
    let mut failures = Vec::new();
    for row in &table {
        let answer = clients.send(row.call.clone()).await;
        if let Err(failure) = check_row(row, &answer) {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows got another answer:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );

    // The services still serve, the saga included.
    still_serving(&clients, &orders, &payments).await;
    assert_no_service_panicked();
    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}
