//! The rules orderflow holds its input to, with no transport attached, so
//! the services' domains can use them without depending on gRPC or NATS.
//!
//! [`identity`] has the id rules that both edges share (requests and
//! events). The rest collects what is wrong with a request as
//! [`FieldViolation`]s, every bad field and not only the first;
//! `orderflow-platform` turns them into `INVALID_ARGUMENT` with
//! `google.rpc.BadRequest` details.
#![forbid(unsafe_code)]

pub mod identity;

/// One bad field of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field path, as in the proto (`items[0].quantity`).
    pub field: String,
    /// What is wrong and what is expected.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Checks an identifier field that must be a canonical, lower-case,
/// hyphenated UUID (the ids orderflow assigns).
pub fn check_uuid(field: &str, value: &str, violations: &mut Vec<FieldViolation>) {
    if value.is_empty() {
        violations.push(FieldViolation::new(field, "is required"));
    } else if !identity::is_canonical_uuid(value) {
        violations.push(FieldViolation::new(
            field,
            "must be a lower-case UUID like 0190c5a2-7b1e-7c3d-9f00-123456789abc",
        ));
    }
}

/// Checks a free-form identifier chosen by a caller: 1 to `max` characters,
/// no whitespace or control characters (the rule events' owner ids are
/// checked by, so an id accepted here is one events may carry).
pub fn check_token(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
    violations: &mut Vec<FieldViolation>,
) {
    if value.is_empty() && !required {
        return;
    }
    if let Some(problem) = identity::token_problem(value, max) {
        violations.push(FieldViolation::new(field, problem));
    }
}

/// Reads `page_size`: 0 means `default`, above `max` means `max`, negative
/// is a violation.
pub fn page_size(
    value: i32,
    default: usize,
    max: usize,
    violations: &mut Vec<FieldViolation>,
) -> usize {
    match usize::try_from(value) {
        Ok(0) => default,
        Ok(n) => n.min(max),
        Err(_) => {
            violations.push(FieldViolation::new("page_size", "must not be negative"));
            default
        }
    }
}
