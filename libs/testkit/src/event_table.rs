//! A service's table of event messages, checked against the proto
//! contract: every message of its events file is listed, under the
//! contract's subject tokens, and reads back as what it frames.
//!
//! The mechanism (framing, decoding, identity checks) is tested once in
//! `orderflow-eventbus`; what each service owns is its table, so that is
//! what each service checks with this.

use std::fmt::Debug;

use orderflow_eventbus::aggregate::Kind;
use prost::Message;

/// Asserts that kind `K` lists exactly the messages of `proto_file` (a file
/// of the contract, `orderflow/order/v1/order_events.proto`), with exactly
/// the subject tokens `tokens`, and that every event frames `sample` so
/// that it reads back as `sample` under the same event.
///
/// # Panics
///
/// Panics, naming what differs, when one of these does not hold.
#[allow(clippy::expect_used)]
pub fn assert_event_table<K: Kind>(proto_file: &str, tokens: &[&str], sample: &K::State)
where
    K::State: PartialEq + Debug,
{
    let set = prost_types::FileDescriptorSet::decode(orderflow_proto::FILE_DESCRIPTOR_SET)
        .expect("the contract's descriptor set decodes");
    let file = set
        .file
        .iter()
        .find(|f| f.name() == proto_file)
        .unwrap_or_else(|| panic!("{proto_file} is not a file of the contract"));
    let mut messages: Vec<String> = file
        .message_type
        .iter()
        .map(|m| format!("{}.{}", file.package(), m.name()))
        .collect();
    let mut listed: Vec<String> = K::EVENTS
        .iter()
        .map(|event| K::encode(*event, sample).0)
        .collect();
    messages.sort();
    listed.sort();
    assert_eq!(
        listed,
        messages,
        "{} lists exactly the messages of {proto_file}, each once",
        std::any::type_name::<K>()
    );
    let mut expected: Vec<&str> = tokens.to_vec();
    let mut listed: Vec<&str> = K::EVENTS.iter().map(|event| K::token(*event)).collect();
    expected.sort_unstable();
    listed.sort_unstable();
    assert_eq!(listed, expected, "the subject tokens are the contract's");
    for event in K::EVENTS {
        let (ce_type, body) = K::encode(*event, sample);
        assert_eq!(
            K::event_for(&ce_type).map(K::token),
            Some(K::token(*event)),
            "{ce_type} is read back as the event it records"
        );
        assert_eq!(
            K::decode(Some(&ce_type), &body).as_ref(),
            Ok(sample),
            "{ce_type} carries the aggregate it framed"
        );
    }
}
