//! The protobuf contract of orderflow, generated from `proto/` by `build.rs`.
//!
//! This crate is the only place that owns generated code: the services convert
//! these types into their domain types at the gRPC edge (`grpc.rs`) and at the
//! event edge (`events.rs`), and nowhere else.
#![allow(
    missing_docs,
    clippy::doc_lazy_continuation,
    clippy::large_enum_variant
)]

/// `orderflow.money.v1`: the `google.type.Money`-shaped amount.
pub mod money {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("orderflow.money.v1");
    }
}

/// `orderflow.order.v1`: the order API and order events.
pub mod order {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("orderflow.order.v1");
    }
}

/// `orderflow.payment.v1`: the payment API and payment events.
pub mod payment {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("orderflow.payment.v1");
    }
}

/// The encoded `FileDescriptorSet` of every file in `proto/`, for server
/// reflection (grpcurl `list` / `describe`) and for tools that decode events
/// dynamically.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/orderflow_descriptor.bin"));

/// The full protobuf name of a message, used as the CloudEvents `ce-type` of
/// events that carry it (`orderflow.order.v1.OrderCreated`, ...).
///
/// prost's `Name` trait provides it from the generated code, so the header can
/// never disagree with the payload's schema.
pub use prost::Name;

/// Names of the event contract shared by both services: streams and
/// subjects. Other programs rely on them (docs/events.md, docs/contract.md).
pub mod contract {
    /// The stream of order events.
    pub const ORDERS_STREAM: &str = "ORDERS";
    /// Subjects of the ORDERS stream.
    pub const ORDERS_SUBJECTS: &str = "orders.>";
    /// The stream of payment events.
    pub const PAYMENTS_STREAM: &str = "PAYMENTS";
    /// Subjects of the PAYMENTS stream.
    pub const PAYMENTS_SUBJECTS: &str = "payments.>";

    /// Every stream of the contract, as `(name, subjects)`.
    pub const STREAMS: &[(&str, &str)] = &[
        (ORDERS_STREAM, ORDERS_SUBJECTS),
        (PAYMENTS_STREAM, PAYMENTS_SUBJECTS),
    ];

    /// The first subject token of order events:
    /// `orders.<customer>.<order_id>.<event>`, where `<customer>` is the
    /// customer id with every byte other than ASCII letters, digits, `-` and
    /// `_` written `~XX` (hex; `acme.eu` is `acme~2Eeu`) and `<event>` one of
    /// [`ORDER_EVENTS`].
    pub const ORDERS_PREFIX: &str = "orders";
    /// The first subject token of payment events:
    /// `payments.<customer>.<payment_id>.<event>`, `<event>` one of
    /// [`PAYMENT_EVENTS`].
    pub const PAYMENTS_PREFIX: &str = "payments";
    /// The event tokens of order subjects, in the order of the proto's
    /// event messages (`OrderCreated`, ...).
    pub const ORDER_EVENTS: &[&str] = &[
        "created",
        "confirmed",
        "payment-failed",
        "cancelled",
        "refunded",
    ];
    /// The timer token of an order's payment deadline: scheduled on
    /// `orders.<customer>.<order_id>.payment-deadline.scheduled`, fired on
    /// `orders.~payment-deadline.<customer>.<order_id>.fired`, each carrying
    /// an `OrderPaymentDeadline`.
    pub const ORDER_PAYMENT_DEADLINE: &str = "payment-deadline";
    /// The event tokens of payment subjects (`PaymentAuthorized`, ...).
    pub const PAYMENT_EVENTS: &[&str] = &["authorized", "declined", "voided", "refunded"];
}

/// `orderflow.admin.v1`: operating the dead-letter stream.
pub mod admin {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("orderflow.admin.v1");
    }
}
