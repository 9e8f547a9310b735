//! Bad input, as `INVALID_ARGUMENT` with `google.rpc.BadRequest` details.
//!
//! Validation code collects [`FieldViolation`]s (every bad field, not just
//! the first), and [`invalid_argument`] turns them into the status a client
//! can read field by field (tonic-types encodes the standard details).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

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

/// `INVALID_ARGUMENT` naming every bad field in its message and in
/// `google.rpc.BadRequest` details.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let message = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let details = ErrorDetails::with_bad_request(
        violations
            .iter()
            .map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone()))
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// Checks an identifier field that must be a canonical, lower-case,
/// hyphenated UUID (the ids orderflow assigns).
pub fn check_uuid(field: &str, value: &str, violations: &mut Vec<FieldViolation>) {
    let canonical = value.len() == 36
        && value.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    if value.is_empty() {
        violations.push(FieldViolation::new(field, "is required"));
    } else if !canonical {
        violations.push(FieldViolation::new(
            field,
            "must be a lower-case UUID like 0190c5a2-7b1e-7c3d-9f00-123456789abc",
        ));
    }
}

/// Checks a free-form identifier chosen by a caller: 1 to `max` characters,
/// no whitespace or control characters.
pub fn check_token(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
    violations: &mut Vec<FieldViolation>,
) {
    if value.is_empty() {
        if required {
            violations.push(FieldViolation::new(field, "is required"));
        }
    } else if value.chars().count() > max {
        violations.push(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        violations.push(FieldViolation::new(
            field,
            "must not contain spaces or control characters",
        ));
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
