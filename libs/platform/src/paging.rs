//! Opaque page tokens (AIP-158).
//!
//! A token carries where the next page starts (a stream sequence) and is
//! bound to the filters of the request that produced it, so a token replayed
//! with other filters is rejected instead of silently skipping results.
//! Tokens of the `v1` format (which held an id) are refused as foreign.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::status::{FieldViolation, check_token, page_size};

/// Default page size when a request asks for 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page; larger requests are served this many.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The token for the page at `position`, for requests with `filters`.
pub fn encode(filters: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v2\n{filters}\n{position}"))
}

/// The position a token holds (`None` for the first page), or the
/// violation of `page_token`.
pub fn decode(token: &str, filters: &str) -> Result<Option<String>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        FieldViolation::new(
            "page_token",
            "is not a next_page_token returned by this method",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, '\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v2"), Some(bound), Some(last)) if bound == filters => Ok(Some(last.to_owned())),
        (Some("v1"), Some(_), Some(_)) => Err(FieldViolation::new(
            "page_token",
            "was issued by an earlier version of orderflow, whose lists were ordered otherwise; repeat the request without page_token",
        )),
        (Some("v2"), Some(_), Some(_)) => Err(FieldViolation::new(
            "page_token",
            "was issued for other filters; repeat the request with the filters of the first page",
        )),
        _ => Err(invalid()),
    }
}

/// The stream sequence a page starts at: 1 for the first page (no
/// position), or the position a token held, which must be a sequence.
pub fn sequence(position: Option<&str>) -> Result<u64, FieldViolation> {
    match position {
        None => Ok(1),
        Some(text) => text.parse::<u64>().ok().filter(|s| *s >= 1).ok_or_else(|| {
            FieldViolation::new(
                "page_token",
                "is not a next_page_token returned by this method",
            )
        }),
    }
}

/// The page size a list request asks for: 0 means [`DEFAULT_PAGE_SIZE`],
/// above [`MAX_PAGE_SIZE`] means that many, negative is a violation.
pub fn size(requested: i32, violations: &mut Vec<FieldViolation>) -> usize {
    page_size(requested, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, violations)
}

/// The optional owner filter `field` of a list request, checked by the rule
/// owner ids enter by: the owner, or `None` (every owner's) when empty.
pub fn owner_filter<'a>(
    field: &str,
    value: &'a str,
    violations: &mut Vec<FieldViolation>,
) -> Option<&'a str> {
    check_token(
        field,
        value,
        orderflow_eventbus::identity::MAX_OWNER_LEN,
        false,
        violations,
    );
    (!value.is_empty()).then_some(value)
}

/// What a token is bound to: the request's filter fields, in order,
/// joined by a separator no validated field holds.
pub fn filters(fields: &[&str]) -> String {
    fields.join("\u{1f}")
}

/// The stream sequence a page starts at: where `token` left off for a
/// request with `filters`, or 1 for the first page. A token that is not one
/// this method returned for these filters is a violation (and 1).
pub fn start(token: &str, filters: &str, violations: &mut Vec<FieldViolation>) -> u64 {
    decode(token, filters)
        .and_then(|next| sequence(next.as_deref()))
        .unwrap_or_else(|violation| {
            violations.push(violation);
            1
        })
}

/// The `next_page_token` of a page whose successor starts at `next`, bound
/// to `filters`; empty after the last page.
pub fn next_token(filters: &str, next: Option<u64>) -> String {
    next.map(|next| encode(filters, &next.to_string()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_stream_sequences() {
        assert_eq!(sequence(None), Ok(1));
        assert_eq!(sequence(Some("42")), Ok(42));
        for bad in ["0", "-1", "x", ""] {
            assert!(sequence(Some(bad)).is_err(), "{bad:?}");
        }
        let v1 = URL_SAFE_NO_PAD.encode("v1\nc-1|0\nabc");
        assert!(decode(&v1, "c-1|0").is_err(), "a v1 token is foreign");
    }

    #[test]
    fn page_tokens_are_bound_to_their_filters() {
        let token = encode("c-1|0", "abc");
        assert_eq!(decode(&token, "c-1|0"), Ok(Some("abc".into())));
        assert!(decode(&token, "c-2|0").is_err());
        assert!(decode("not base64!", "c-1|0").is_err());
        assert!(decode(&encode("x", "y")[1..], "x").is_err());
        assert_eq!(decode("", "c-1|0"), Ok(None));
    }

    #[test]
    fn a_next_token_starts_the_next_page_for_the_same_filters_only() {
        let filters = filters(&["c-1", "2"]);
        assert_eq!(filters, "c-1\u{1f}2");
        assert_eq!(next_token(&filters, None), "");
        let token = next_token(&filters, Some(42));
        let mut violations = Vec::new();
        assert_eq!(start(&token, &filters, &mut violations), 42);
        assert_eq!(start("", &filters, &mut violations), 1);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(start(&token, "c-2\u{1f}2", &mut violations), 1);
        assert_eq!(start("junk", &filters, &mut violations), 1);
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["page_token", "page_token"]);
    }

    #[test]
    fn an_owner_filter_is_optional_and_checked_as_owner_ids_are() {
        let mut violations = Vec::new();
        assert_eq!(owner_filter("customer_id", "", &mut violations), None);
        assert_eq!(
            owner_filter("customer_id", "c-1", &mut violations),
            Some("c-1")
        );
        assert!(violations.is_empty(), "{violations:?}");
        owner_filter("customer_id", "a b", &mut violations);
        owner_filter("customer_id", &"x".repeat(129), &mut violations);
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert_eq!(size(0, &mut violations), DEFAULT_PAGE_SIZE);
        assert_eq!(size(i32::MAX, &mut violations), MAX_PAGE_SIZE);
        assert_eq!(violations.len(), 2);
        size(-1, &mut violations);
        assert_eq!(violations[2].field, "page_size");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 1024,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// Any token is a position or a `page_token` violation, never a
            /// panic.
            #[test]
            fn any_token_is_a_position_or_a_violation(
                token in prop_oneof![
                    any::<String>(),
                    "[A-Za-z0-9_-]{0,64}",
                    prop::collection::vec(any::<u8>(), 0..64)
                        .prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
                ],
                filters in any::<String>(),
            ) {
                if let Err(violation) = decode(&token, &filters) {
                    prop_assert_eq!(violation.field, "page_token");
                }
            }

            /// A token gives back its position for its own filters only
            /// (filters never hold a line break: they are built from
            /// validated fields).
            #[test]
            fn tokens_round_trip_for_their_filters_only(
                filters in "[^\n]{0,40}",
                other in "[^\n]{0,40}",
                last in any::<String>(),
            ) {
                let token = encode(&filters, &last);
                prop_assert_eq!(decode(&token, &filters), Ok(Some(last)));
                if other != filters {
                    prop_assert!(decode(&token, &other).is_err());
                }
            }
        }
    }
}
