//! Arbitrary events: random payloads under the event types the services
//! know, published on the real streams; each one no consumer can apply
//! leaves exactly one dead letter naming that consumer and the reason, each
//! one a consumer applies or ignores leaves none, and both services serve on.

use super::arbitrary_requests::{arb_item, arb_money, id, status_value, text};
use super::*;

/// Every event type either service knows, with the stream it belongs on.
pub(crate) fn known_event_types() -> Vec<(&'static str, String)> {
    vec![
        ("ORDERS", OrderCreated::full_name()),
        ("ORDERS", OrderConfirmed::full_name()),
        ("ORDERS", OrderPaymentFailed::full_name()),
        ("ORDERS", OrderCancelled::full_name()),
        ("ORDERS", OrderRefunded::full_name()),
        ("PAYMENTS", PaymentAuthorized::full_name()),
        ("PAYMENTS", PaymentDeclined::full_name()),
        ("PAYMENTS", PaymentRefunded::full_name()),
        ("PAYMENTS", PaymentVoided::full_name()),
    ]
}

/// An event as a foreign or broken publisher might append it.
#[derive(Clone, Debug)]
pub(crate) struct Garbage {
    pub(crate) stream: &'static str,
    pub(crate) ce_type: Option<String>,
    pub(crate) payload: Vec<u8>,
    /// Appended as the services append: expecting the subject to be new
    /// (`Nats-Expected-Last-Subject-Sequence: 0`, kept in the stored message).
    pub(crate) expects_new_subject: bool,
}

/// Garbage that every run publishes besides the random events.
pub(crate) fn fixed_garbage() -> Vec<Garbage> {
    let order = Order {
        order_id: uuid_text(0xfeed_0001, false),
        customer_id: String::from("c-negative"),
        total: Some(money("EUR", -5, 0)),
        status: OrderStatus::PendingPayment as i32,
        ..Default::default()
    };
    let mut fixed = vec![
        // A well-formed order whose total would pay money out if charged.
        Garbage {
            stream: "ORDERS",
            ce_type: Some(OrderCreated::full_name()),
            payload: OrderCreated { order: Some(order) }.encode_to_vec(),
            expects_new_subject: true,
        },
    ];
    // Payments of orders that do not exist, appended as the payment service
    // appends: each is dead-lettered by the order service, and each dead
    // letter after the first used to be refused (the copy carried the
    // original's expected-sequence header).
    for n in 0..3 {
        let payment = Payment {
            payment_id: uuid_text(0xfeed_0100 + n, false),
            order_id: uuid_text(0xfeed_0200 + n, false),
            customer_id: String::from("c-orphan"),
            amount: Some(money("EUR", 1, 0)),
            status: PaymentStatus::Authorized as i32,
            ..Default::default()
        };
        fixed.push(Garbage {
            stream: "PAYMENTS",
            ce_type: Some(PaymentAuthorized::full_name()),
            payload: PaymentAuthorized {
                payment: Some(payment),
            }
            .encode_to_vec(),
            expects_new_subject: true,
        });
    }
    fixed
}

pub(crate) fn arb_timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    prop::option::of(
        (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

/// An order snapshot with every field arbitrary.
pub(crate) fn arb_order() -> BoxedStrategy<Order> {
    (
        (id(vec![UNKNOWN_ID.to_owned()]), text()),
        prop::collection::vec(arb_item(), 0..3),
        prop::option::of(arb_money()),
        status_value(),
        (text(), text(), text()),
        (arb_timestamp(), arb_timestamp()),
        any::<u64>(),
    )
        .prop_map(
            |(
                (order_id, customer_id),
                items,
                total,
                status,
                (payment_id, failure_reason, request_id),
                (create_time, update_time),
                version,
            )| Order {
                order_id,
                customer_id,
                items,
                total,
                status,
                payment_id,
                failure_reason,
                create_time,
                update_time,
                request_id,
                version,
            },
        )
        .boxed()
}

/// A payment snapshot with every field arbitrary.
pub(crate) fn arb_payment() -> BoxedStrategy<Payment> {
    (
        (
            id(vec![UNKNOWN_ID.to_owned()]),
            id(vec![UNKNOWN_ID.to_owned()]),
            text(),
        ),
        prop::option::of(arb_money()),
        status_value(),
        (text(), text(), text()),
        (arb_timestamp(), arb_timestamp()),
        any::<u64>(),
    )
        .prop_map(
            |(
                (payment_id, order_id, customer_id),
                amount,
                status,
                (gateway_reference, decline_reason, refund_reference),
                (create_time, update_time),
                version,
            )| Payment {
                payment_id,
                order_id,
                customer_id,
                amount,
                status,
                gateway_reference,
                decline_reason,
                create_time,
                update_time,
                version,
                refund_reference,
            },
        )
        .boxed()
}

/// An order as a foreign publisher might write it: ids of the right form,
/// every other field arbitrary (a zero or negative total, say).
pub(crate) fn plausible_order() -> BoxedStrategy<Order> {
    (any::<u128>(), "[A-Za-z0-9._-]{1,16}", arb_order())
        .prop_map(|(n, customer_id, order)| Order {
            order_id: uuid_text(n, false),
            customer_id,
            ..order
        })
        .boxed()
}

/// A payment as a foreign publisher might write it.
pub(crate) fn plausible_payment() -> BoxedStrategy<Payment> {
    (
        any::<u128>(),
        any::<u128>(),
        "[A-Za-z0-9._-]{1,16}",
        arb_payment(),
    )
        .prop_map(|(p, o, customer_id, payment)| Payment {
            payment_id: uuid_text(p, false),
            order_id: uuid_text(o, false),
            customer_id,
            ..payment
        })
        .boxed()
}

/// Event bodies for `stream`: random bytes; a well-formed event of that
/// stream (every order event is `{ Order order = 1; }`, every payment event
/// `{ Payment payment = 1; }`) with arbitrary fields; or such an event cut
/// short or with one byte changed.
pub(crate) fn arb_event_payload(stream: &'static str) -> BoxedStrategy<Vec<u8>> {
    let well_formed = if stream == "ORDERS" {
        prop_oneof![arb_order(), plausible_order()]
            .prop_map(|order| OrderCreated { order: Some(order) }.encode_to_vec())
            .boxed()
    } else {
        prop_oneof![arb_payment(), plausible_payment()]
            .prop_map(|payment| {
                PaymentAuthorized {
                    payment: Some(payment),
                }
                .encode_to_vec()
            })
            .boxed()
    };
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..300),
        4 => well_formed.clone(),
        1 => (well_formed, any::<prop::sample::Index>(), any::<u8>(), any::<bool>())
            .prop_map(|(mut bytes, at, byte, cut)| {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    if cut {
                        bytes.truncate(at);
                    } else {
                        bytes[at] = byte;
                    }
                }
                bytes
            }),
    ]
    .boxed()
}

/// Garbage for `stream`: mostly under the event types of that stream, some
/// under the other stream's types, unknown types or none.
pub(crate) fn arb_garbage_on(stream: &'static str) -> BoxedStrategy<Garbage> {
    let (own, other): (Vec<String>, Vec<String>) = {
        let (own, other): (Vec<_>, Vec<_>) = known_event_types()
            .into_iter()
            .partition(|(s, _)| *s == stream);
        (
            own.into_iter().map(|(_, t)| t).collect(),
            other.into_iter().map(|(_, t)| t).collect(),
        )
    };
    (
        prop_oneof![
            6 => prop::sample::select(own).prop_map(Some),
            1 => prop::sample::select(other).prop_map(Some),
            1 => text().prop_map(Some),
            1 => Just(None),
        ],
        arb_event_payload(stream),
    )
        .prop_map(move |(ce_type, payload)| Garbage {
            stream,
            ce_type,
            payload,
            expects_new_subject: false,
        })
        .boxed()
}

pub(crate) fn arb_garbage() -> BoxedStrategy<Garbage> {
    prop_oneof![arb_garbage_on("ORDERS"), arb_garbage_on("PAYMENTS")].boxed()
}

/// The durable consumers of both services, by stream.
pub(crate) fn durables() -> [(&'static str, &'static str); 4] {
    use payment_service::charging::{CANCELLATIONS_DURABLE, DURABLE, FAILURES_DURABLE};
    [
        ("ORDERS", DURABLE),
        ("ORDERS", CANCELLATIONS_DURABLE),
        ("ORDERS", FAILURES_DURABLE),
        ("PAYMENTS", order_service::settlement::DURABLE),
    ]
}

/// Whether durable `durable` receives `subject`: the payment service has one
/// durable per kind of order event (`charging::consumers`), each filtering
/// `orders.*.*.<event>`, so the subject's last token says which.
pub(crate) fn receives(durable: &str, subject: &str) -> bool {
    let last = |s: &str| s.rsplit('.').next().map(str::to_owned);
    payment_service::charging::consumers()
        .iter()
        .find(|spec| spec.durable == durable)
        .is_none_or(|spec| {
            spec.filter_subjects
                .iter()
                .any(|f| last(f) == last(subject))
        })
}

/// The event token of the subject garbage event `i` goes to: one that the
/// stream's consumer receives (its filter subjects), so every garbage event
/// reaches a handler; what the handler does is judged by the event's
/// `ce-type` and body, never by its subject.
pub(crate) fn received_token(stream: &str, i: usize) -> &'static str {
    const ORDER_TOKENS: [&str; 3] = ["created", "cancelled", "payment-failed"];
    const PAYMENT_TOKENS: [&str; 3] = ["authorized", "declined", "refunded"];
    if stream == "ORDERS" {
        ORDER_TOKENS[i % ORDER_TOKENS.len()]
    } else {
        PAYMENT_TOKENS[i % PAYMENT_TOKENS.len()]
    }
}

/// The last sequence of `stream`.
pub(crate) async fn stream_length(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.last_sequence
}

/// `n` garbage events, drawn by proptest.
pub(crate) fn garbage_events(n: usize) -> Vec<Garbage> {
    let mut runner = TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = arb_garbage().boxed();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// A garbage event as stored in its stream.
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) subject: String,
    pub(crate) sequence: u64,
    pub(crate) garbage: Garbage,
}

/// What one consumer must do with one garbage event.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fate {
    /// Refuse it: exactly one dead letter, whose reason contains one of
    /// these.
    DeadLetter(&'static [&'static str]),
    /// Apply or ignore it: no dead letter.
    Handled,
    /// Either, on details this test does not model (the money rules of a
    /// total, an earlier payment of the same order); a dead letter's reason
    /// then contains one of these (any reason when there are none).
    Either(&'static [&'static str]),
}

pub(crate) const UNKNOWN_ORDER_TYPE: &[&str] = &["unknown order event type", "no ce-type header"];
pub(crate) const UNKNOWN_PAYMENT_TYPE: &[&str] =
    &["unknown payment event type", "no ce-type header"];
/// The projections' and the handlers' wording of a body that does not decode.
pub(crate) const UNDECODABLE: &[&str] = &["undecodable", "is not a valid"];
pub(crate) const NO_ORDER: &[&str] = &["carries no order"];
pub(crate) const NO_PAYMENT: &[&str] = &["carries no payment"];
pub(crate) const NOT_A_UUID: &[&str] = &["not a canonical UUID"];
pub(crate) const BAD_CUSTOMER: &[&str] = &["customer id"];
pub(crate) const NO_SUCH_ORDER: &[&str] = &["not found"];
pub(crate) const BAD_TOTAL: &[&str] = &["total"];

/// A garbage event's body read as the event its `ce-type` names.
pub(crate) enum Body<T> {
    /// The type is none of this stream's events (or missing).
    UnknownType,
    Undecodable,
    /// It decodes, without the order or payment every event carries.
    Empty,
    Carries(T),
}

/// Every order event is `{ Order order = 1; }`, so one decoder reads them all.
pub(crate) fn order_body(ce_type: Option<&str>, payload: &[u8]) -> Body<Order> {
    let known = [
        OrderCreated::full_name(),
        OrderConfirmed::full_name(),
        OrderPaymentFailed::full_name(),
        OrderCancelled::full_name(),
        OrderRefunded::full_name(),
    ];
    if !ce_type.is_some_and(|t| known.iter().any(|k| k == t)) {
        return Body::UnknownType;
    }
    match OrderCreated::decode(payload) {
        Err(_) => Body::Undecodable,
        Ok(OrderCreated { order: None }) => Body::Empty,
        Ok(OrderCreated { order: Some(order) }) => Body::Carries(order),
    }
}

/// Every payment event is `{ Payment payment = 1; }`.
pub(crate) fn payment_body(ce_type: Option<&str>, payload: &[u8]) -> Body<Payment> {
    let known = [
        PaymentAuthorized::full_name(),
        PaymentDeclined::full_name(),
        PaymentRefunded::full_name(),
        PaymentVoided::full_name(),
    ];
    if !ce_type.is_some_and(|t| known.iter().any(|k| k == t)) {
        return Body::UnknownType;
    }
    match PaymentAuthorized::decode(payload) {
        Err(_) => Body::Undecodable,
        Ok(PaymentAuthorized { payment: None }) => Body::Empty,
        Ok(PaymentAuthorized {
            payment: Some(payment),
        }) => Body::Carries(payment),
    }
}

/// The ids orderflow assigns: lower-case, hyphenated UUIDs.
pub(crate) fn canonical_uuid(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// A customer id an order can have: 1 to 128 characters, no whitespace or
/// control characters.
pub(crate) fn valid_customer(id: &str) -> bool {
    (1..=128).contains(&id.chars().count())
        && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Why no service can have written `order`, in the order the services check.
pub(crate) fn order_identity(order: &Order) -> Option<&'static [&'static str]> {
    if !canonical_uuid(&order.order_id) {
        Some(NOT_A_UUID)
    } else if !valid_customer(&order.customer_id) {
        Some(BAD_CUSTOMER)
    } else {
        None
    }
}

/// Order ids whose payment an event other than the one being judged may have
/// decided: the well-known id (an earlier run on the same external server
/// may have paid it) and every id carried by more than one garbage event.
pub(crate) fn shared_order_ids(published: &[Published]) -> Vec<String> {
    let mut seen = BTreeMap::<String, usize>::new();
    for event in published.iter().filter(|e| e.garbage.stream == "ORDERS") {
        if let Body::Carries(order) =
            order_body(event.garbage.ce_type.as_deref(), &event.garbage.payload)
        {
            *seen.entry(order.order_id).or_default() += 1;
        }
    }
    seen.into_iter()
        .filter(|(id, n)| *n > 1 || id == UNKNOWN_ID)
        .map(|(id, _)| id)
        .collect()
}

/// What consumer `durable` must do with `garbage`, from the event contract
/// alone: what the body says, never what a service did with it.
pub(crate) fn fate(durable: &str, garbage: &Garbage, shared: &[String]) -> Fate {
    let ce_type = garbage.ce_type.as_deref();
    let is = |name: String| ce_type == Some(name.as_str());
    use payment_service::charging::{CANCELLATIONS_DURABLE, DURABLE, FAILURES_DURABLE};
    match durable {
        DURABLE | CANCELLATIONS_DURABLE | FAILURES_DURABLE => {
            // Confirmations, failures and refunds follow from the payment
            // service's own events: it ignores them, whatever they carry.
            if is(OrderConfirmed::full_name()) || is(OrderRefunded::full_name()) {
                return Fate::Handled;
            }
            // A failed order will never be paid: handled as a cancellation.
            let ends_payment =
                is(OrderCancelled::full_name()) || is(OrderPaymentFailed::full_name());
            if !is(OrderCreated::full_name()) && !ends_payment {
                return Fate::DeadLetter(UNKNOWN_ORDER_TYPE);
            }
            let order = match order_body(ce_type, &garbage.payload) {
                Body::UnknownType => {
                    unreachable!("the type is OrderCreated, OrderCancelled or OrderPaymentFailed")
                }
                Body::Undecodable => return Fate::DeadLetter(UNDECODABLE),
                Body::Empty => return Fate::DeadLetter(NO_ORDER),
                Body::Carries(order) => order,
            };
            if let Some(reason) = order_identity(&order) {
                return Fate::DeadLetter(reason);
            }
            let first_of_its_order = !shared.contains(&order.order_id);
            if ends_payment {
                // An order never charged is voided.
                return if first_of_its_order {
                    Fate::Handled
                } else {
                    Fate::Either(&[])
                };
            }
            let not_positive = order
                .total
                .as_ref()
                .is_none_or(|t| t.units < 0 || (t.units == 0 && t.nanos <= 0));
            if not_positive && first_of_its_order {
                // Charging it would pay money out, or charge nothing.
                Fate::DeadLetter(BAD_TOTAL)
            } else {
                Fate::Either(BAD_TOTAL)
            }
        }
        order_service::settlement::DURABLE => {
            if is(PaymentVoided::full_name()) {
                // A voided payment changes no order: ignored.
                return Fate::Handled;
            }
            match payment_body(ce_type, &garbage.payload) {
                Body::UnknownType => Fate::DeadLetter(UNKNOWN_PAYMENT_TYPE),
                Body::Undecodable => Fate::DeadLetter(UNDECODABLE),
                Body::Empty => Fate::DeadLetter(NO_PAYMENT),
                Body::Carries(payment) if !canonical_uuid(&payment.order_id) => {
                    Fate::DeadLetter(NOT_A_UUID)
                }
                // No garbage payment names an order that exists.
                Body::Carries(_) => Fate::DeadLetter(NO_SUCH_ORDER),
            }
        }
        other => panic!("no fate for consumer {other}"),
    }
}

/// Whether `letters` (the dead letters `durable` left for `event`) are what
/// `fate` demands: as many as it says, each a copy of the event naming its
/// stream, sequence and consumer, with a reason it allows.
pub(crate) fn check_dead_letters(
    event: &Published,
    stream: &str,
    durable: &str,
    fate: Fate,
    letters: &[&StoredMessage],
) -> Result<(), String> {
    let reasons: Vec<_> = letters
        .iter()
        .map(|l| l.header(headers::DEAD_LETTER_REASON))
        .collect();
    let allowed = match (fate, letters) {
        (Fate::Handled, []) | (Fate::Either(_), []) => return Ok(()),
        (Fate::DeadLetter(_), []) => return Err(String::from("no dead letter")),
        (Fate::DeadLetter(allowed) | Fate::Either(allowed), [_]) => allowed,
        (Fate::Handled, _) => return Err(format!("dead-lettered: {reasons:?}")),
        (_, _) => return Err(format!("{} dead letters: {reasons:?}", letters.len())),
    };
    let letter = letters[0];
    let expected_subject = format!("deadletter.{stream}.{durable}");
    if letter.subject != expected_subject {
        return Err(format!(
            "the dead letter is on {}, not {expected_subject}",
            letter.subject
        ));
    }
    let sequence = event.sequence.to_string();
    for (name, want) in [
        (headers::ORIGINAL_STREAM, stream),
        (headers::ORIGINAL_SEQUENCE, sequence.as_str()),
    ] {
        if letter.header(name).as_deref() != Some(want) {
            return Err(format!(
                "the dead letter's {name} is {:?}, not {want}",
                letter.header(name)
            ));
        }
    }
    if letter.payload != event.garbage.payload {
        return Err(String::from("the dead letter's body is not the event's"));
    }
    let reason = letter
        .header(headers::DEAD_LETTER_REASON)
        .unwrap_or_default();
    let explained = if allowed.is_empty() {
        !reason.trim().is_empty()
    } else {
        allowed.iter().any(|a| reason.contains(a))
    };
    if !explained {
        return Err(format!(
            "the dead letter's reason {reason:?} is not one of {allowed:?}"
        ));
    }
    Ok(())
}

/// How long every consumer may take to settle the garbage: the half minute
/// a missing order is retried for, and time to spare.
const SETTLED_WITHIN: Duration = Duration::from_secs(90);

/// How many garbage events are published.
pub(crate) const GARBAGE_EVENTS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_events_are_dead_lettered_and_both_services_keep_serving() {
    record_service_panics();
    // A server of its own: the test reads whole streams.
    let nats = NatsServer::start_own();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
    let clients = Clients::connect(&orders, &payments).await;
    let js = jetstream(&nats.url()).await;

    let mut published = Vec::new();
    let garbage = fixed_garbage()
        .into_iter()
        .chain(garbage_events(GARBAGE_EVENTS));
    for (i, mut garbage) in garbage.enumerate() {
        let subject = format!(
            "{}.garbage.{}.{}",
            garbage.stream.to_lowercase(),
            uuid_text(u128::from(std::process::id()) << 64 | i as u128, false),
            received_token(garbage.stream, i)
        );
        let mut headers = async_nats::HeaderMap::new();
        // The process id keeps a second run against the same external server
        // from being de-duplicated into storing nothing.
        let msg_id = format!("garbage-{}-{i}", std::process::id());
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        if garbage.expects_new_subject {
            headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        }
        // A header value cannot carry a line break; NATS would split it.
        // What the consumers judge is the value sent.
        garbage.ce_type = garbage
            .ce_type
            .map(|t| t.chars().filter(|c| !c.is_control()).collect());
        if let Some(ce_type) = &garbage.ce_type {
            headers.insert("ce-type", ce_type.as_str());
        }
        let ack = js
            .publish_with_headers(subject.clone(), headers, garbage.payload.clone().into())
            .await
            .unwrap()
            .await
            .expect("JetStream stores the garbage event");
        assert!(!ack.duplicate, "{msg_id} was taken for a duplicate");
        published.push(Published {
            subject,
            sequence: ack.sequence,
            garbage,
        });
    }

    // Settled: every consumer has handled everything, and the streams have
    // stopped growing (the services' own reactions, a voided payment say,
    // are appended and handled too). A payment naming an order that does
    // not exist is retried for half a minute before it is dead-lettered.
    let started = std::time::Instant::now();
    let caught_up = tokio::time::timeout(SETTLED_WITHIN, async {
        let mut last = None;
        loop {
            let mut all = true;
            for (stream, durable) in durables() {
                all &= consumer_caught_up(&js, stream, durable).await;
            }
            let lengths = (
                stream_length(&js, "ORDERS").await,
                stream_length(&js, "PAYMENTS").await,
            );
            if all && last == Some(lengths) {
                break;
            }
            last = all.then_some(lengths);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    if caught_up.is_err() {
        let mut state = Vec::new();
        for (stream, durable) in durables() {
            let info = js
                .get_stream(stream)
                .await
                .unwrap()
                .consumer_info(durable)
                .await
                .unwrap();
            state.push(format!(
                "{durable}: pending {}, ack pending {}, redelivered {}",
                info.num_pending, info.num_ack_pending, info.num_redelivered
            ));
        }
        panic!(
            "the consumers did not catch up within {SETTLED_WITHIN:?}:\n{}\npublished:\n{published:#?}",
            state.join("\n")
        );
    }
    eprintln!(
        "{} garbage events settled by every consumer in {:?}",
        published.len(),
        started.elapsed()
    );

    // Settled means every dead letter is stored: a consumer stores the copy
    // before it terminates the original.
    let letters = read_all(&js, DEAD_LETTER_STREAM, ">").await;
    let shared = shared_order_ids(&published);
    let mut wrong = Vec::new();
    let mut dead_lettered = 0;
    for event in &published {
        for (stream, durable) in durables() {
            if stream != event.garbage.stream || !receives(durable, &event.subject) {
                continue;
            }
            let fate = fate(durable, &event.garbage, &shared);
            let mine: Vec<_> = letters
                .iter()
                .filter(|l| {
                    l.header(headers::ORIGINAL_SUBJECT).as_deref() == Some(event.subject.as_str())
                        && l.header(headers::ORIGINAL_CONSUMER).as_deref() == Some(durable)
                })
                .collect();
            dead_lettered += mine.len();
            if let Err(why) = check_dead_letters(event, stream, durable, fate, &mine) {
                wrong.push(format!(
                    "{durable} on {} (sequence {}): {why}\n    expected {fate:?} for {:?}",
                    event.subject, event.sequence, event.garbage
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} consumers did the wrong thing with a garbage event; the first ones:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(8)].join("\n")
    );
    // The fixed garbage alone leaves four: a charge of a negative total, and
    // three payments of orders that do not exist.
    assert!(
        dead_lettered >= 4,
        "only {dead_lettered} dead letters for the garbage"
    );
    eprintln!(
        "{dead_lettered} dead letters for {} garbage events",
        published.len()
    );

    // Whatever the garbage said, the payment service charged only positive
    // amounts (a negative "charge" would pay money out).
    for event in read_all(&js, "PAYMENTS", ">").await {
        if event.header("ce-source").as_deref() != Some(payment_service::events::SOURCE) {
            continue;
        }
        let payment = <payment_service::events::PaymentAggregate as Kind>::decode(
            event.header("ce-type").as_deref(),
            &event.payload,
        )
        .unwrap();
        if payment.status != PaymentStatus::Authorized as i32 {
            continue;
        }
        let amount = payment.amount.clone().unwrap_or_default();
        assert!(
            amount.units > 0 || (amount.units == 0 && amount.nanos > 0),
            "the payment service charged {payment:?}"
        );
    }

    still_serving(&clients, &orders, &payments).await;
    clients
        .orders
        .clone()
        .list_orders(ListOrdersRequest::default())
        .await
        .unwrap();
    assert_no_service_panicked();
    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}
