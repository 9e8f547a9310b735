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
}
