//! Bad input, as `INVALID_ARGUMENT` with `google.rpc.BadRequest` details.
//!
//! Validation code collects [`FieldViolation`]s (every bad field, not just
//! the first; the checks live in `orderflow-validation`, which the domains
//! use without this crate), and [`invalid_argument`] turns them into the
//! status a client can read field by field (tonic-types encodes the
//! standard details).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use orderflow_validation::{FieldViolation, check_token, check_uuid, page_size};

/// How many bytes of violations (field names and descriptions) one status
/// carries.
///
/// The status travels in HTTP/2 trailers, twice (`grpc-message`, and
/// `grpc-status-details-bin` in base64), and clients refuse trailers above
/// their header-list limit: 16 KiB for tonic/hyper, 8 KiB by default for
/// gRPC's C core (Python, Ruby, C++). Past the limit the caller gets a
/// protocol error instead of INVALID_ARGUMENT, so a request with a hundred
/// bad items, or a bad value echoed back, must not push the trailers past
/// it: 1.5 KiB of violations makes at most about 6 KiB of trailers.
pub const MAX_VIOLATION_BYTES: usize = 1536;

/// The longest description kept, in bytes; longer ones (a description
/// quoting a huge bad value) are cut at a character boundary.
pub const MAX_DESCRIPTION_BYTES: usize = 200;

/// `INVALID_ARGUMENT` naming the bad fields in its message and in
/// `google.rpc.BadRequest` details: every one, in order, as far as
/// [`MAX_VIOLATION_BYTES`] allows; the message says how many more there are.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let mut kept = Vec::new();
    let mut size = 0;
    for violation in violations {
        let description = cut(&violation.description, MAX_DESCRIPTION_BYTES);
        // As in the message: "field: description; ".
        size += violation.field.len() + description.len() + 4;
        // The first one is always kept, however long.
        if size > MAX_VIOLATION_BYTES && !kept.is_empty() {
            break;
        }
        kept.push((violation.field.as_str(), description));
    }
    let mut message = kept
        .iter()
        .map(|(field, description)| format!("{field}: {description}"))
        .collect::<Vec<_>>()
        .join("; ");
    let more = violations.len() - kept.len();
    if more > 0 {
        message.push_str(&format!(
            "; and {more} more invalid field(s): fix these and send again"
        ));
    }
    let details = ErrorDetails::with_bad_request(
        kept.iter()
            .map(|(field, description)| {
                tonic_types::FieldViolation::new(*field, description.clone())
            })
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// `text` cut to at most `max` bytes at a character boundary, marked with
/// an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Whether a value is a canonical, lower-case, hyphenated UUID: the rule
/// events are held to too.
pub use orderflow_validation::identity::is_canonical_uuid;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_request_details_name_every_field() {
        let status = invalid_argument(&[
            FieldViolation::new("customer_id", "is required"),
            FieldViolation::new("items[0].quantity", "must be positive"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().map(|b| b.field_violations.clone());
        let fields: Vec<String> = bad
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["customer_id", "items[0].quantity"]);
    }

    #[test]
    fn many_or_long_violations_stay_within_what_clients_accept() {
        let many: Vec<FieldViolation> = (0..500)
            .map(|i| FieldViolation::new(format!("items[{i}].quantity"), "must be positive"))
            .collect();
        let status = invalid_argument(&many);
        let fields: Vec<String> = status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert!(fields.len() > 20 && fields.len() < 500, "{}", fields.len());
        assert_eq!(fields[..2], ["items[0].quantity", "items[1].quantity"]);
        assert!(status.message().ends_with(&format!(
            "and {} more invalid field(s): fix these and send again",
            500 - fields.len()
        )));
        assert!(status.message().len() <= MAX_VIOLATION_BYTES + 100);

        let huge = "É".repeat(100_000);
        let status = invalid_argument(&[FieldViolation::new(
            "items[0].unit_price.currency_code",
            format!("must be a three-letter code, got {huge:?}"),
        )]);
        let Some(details) = status.get_details_bad_request() else {
            panic!("no BadRequest details")
        };
        assert_eq!(details.field_violations.len(), 1);
        let description = &details.field_violations[0].description;
        assert!(description.len() <= MAX_DESCRIPTION_BYTES && description.ends_with('…'));
        assert!(status.details().len() < 4 * 1024);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn violation() -> impl Strategy<Value = FieldViolation> {
            (
                prop_oneof![
                    "[a-z_]{1,20}(\\[[0-9]{1,3}\\]\\.[a-z_.]{1,30})?",
                    any::<String>()
                ],
                prop_oneof![
                    20 => "[ -~é日]{0,80}",
                    1 => (0usize..5000).prop_map(|n| "É".repeat(n)),
                ],
            )
                .prop_map(|(field, description)| FieldViolation::new(field, description))
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 64,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// However many violations and however long, the status names
            /// the first ones in order and stays small enough for any
            /// client's trailers (its message and details travel there).
            #[test]
            fn invalid_argument_is_bounded_and_keeps_order(
                violations in prop::collection::vec(violation(), 1..200),
            ) {
                let status = invalid_argument(&violations);
                prop_assert_eq!(status.code(), Code::InvalidArgument);
                let named: Vec<String> = status
                    .get_details_bad_request()
                    .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                    .unwrap_or_default();
                prop_assert!(!named.is_empty());
                let expected: Vec<String> =
                    violations.iter().take(named.len()).map(|v| v.field.clone()).collect();
                prop_assert_eq!(&named, &expected);
                // The first field name is the caller's to choose only in
                // tests; ours are short. Everything else is bounded.
                let first = violations[0].field.len();
                prop_assert!(status.message().len() <= MAX_VIOLATION_BYTES + first + 300);
                prop_assert!(status.details().len() <= 2 * MAX_VIOLATION_BYTES + 2 * first + 600);
            }

            /// The checks answer for any value without panicking, and agree
            /// with what they promise.
            #[test]
            fn checks_never_panic(
                value in any::<String>(),
                max in 0usize..200,
                size in any::<i32>(),
            ) {
                let mut violations = Vec::new();
                check_uuid("id", &value, &mut violations);
                prop_assert_eq!(violations.is_empty(), is_canonical_uuid(&value));
                let mut violations = Vec::new();
                check_token("token", &value, max, true, &mut violations);
                if violations.is_empty() {
                    prop_assert!(!value.is_empty() && value.chars().count() <= max);
                }
                let mut violations = Vec::new();
                let page = page_size(size, 50, 1000, &mut violations);
                prop_assert!((1..=1000).contains(&page));
                prop_assert_eq!(violations.is_empty(), size >= 0);
            }
        }
    }

    #[test]
    fn uuids_must_be_canonical() {
        let mut v = Vec::new();
        check_uuid("order_id", "0190c5a2-7b1e-7c3d-9f00-123456789abc", &mut v);
        assert!(v.is_empty());
        check_uuid("order_id", "0190C5A2-7B1E-7C3D-9F00-123456789ABC", &mut v);
        check_uuid("order_id", "x", &mut v);
        check_uuid("order_id", "", &mut v);
        assert_eq!(v.len(), 3);
    }
}
