//! Opaque page tokens (AIP-158).
//!
//! A token carries the last key of the previous page and is bound to the
//! filters of the request that produced it, so a token replayed with other
//! filters is rejected instead of silently skipping results.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::status::FieldViolation;

/// Default page size when a request asks for 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page; larger requests are served this many.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The token for the page after `last`, for requests with `filters`.
pub fn encode(filters: &str, last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1\n{filters}\n{last}"))
}

/// The last key of the previous page (`None` for the first page), or the
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
        (Some("v1"), Some(bound), Some(last)) if bound == filters => Ok(Some(last.to_owned())),
        (Some("v1"), Some(_), Some(_)) => Err(FieldViolation::new(
            "page_token",
            "was issued for other filters; repeat the request with the filters of the first page",
        )),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_are_bound_to_their_filters() {
        let token = encode("c-1|0", "abc");
        assert_eq!(decode(&token, "c-1|0"), Ok(Some("abc".into())));
        assert!(decode(&token, "c-2|0").is_err());
        assert!(decode("not base64!", "c-1|0").is_err());
        assert!(decode(&encode("x", "y")[1..], "x").is_err());
        assert_eq!(decode("", "c-1|0"), Ok(None));
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
