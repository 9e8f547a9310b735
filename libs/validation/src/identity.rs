//! The ids orderflow writes, and the reasons an event is refused for
//! carrying others.
//!
//! Every aggregate id orderflow assigns is a canonical UUID, and every owner
//! id (a customer) is a token a caller chose within the rule the gRPC edge
//! enforces. An event whose ids break these rules comes from a foreign or
//! broken publisher: no retry can apply it (its subject would be invalid),
//! so it is refused at once. The rules live here, once, because both the
//! event edge (`orderflow-eventbus`) and the gRPC edge (the services and
//! `orderflow-platform`) need them, and the two must never disagree.

/// The longest owner id, in characters.
pub const MAX_OWNER_LEN: usize = 128;

/// Whether `value` is a canonical, lower-case, hyphenated UUID: the form of
/// every id orderflow assigns.
pub fn is_canonical_uuid(value: &str) -> bool {
    value.len() == 36
        && value.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// What is wrong with `value` as an identifier chosen by a caller (1 to
/// `max` characters, no whitespace or control characters), said to follow
/// its name: `is required`; `None` when nothing is.
pub fn token_problem(value: &str, max: usize) -> Option<String> {
    if value.is_empty() {
        Some(String::from("is required"))
    } else if value.chars().count() > max {
        Some(format!("must be at most {max} characters"))
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some(String::from(
            "must not contain spaces or control characters",
        ))
    } else {
        None
    }
}

/// `Ok` when `id` is a canonical UUID; else why not, naming the id as
/// `what` (`an order id`): `an order id that is not a canonical UUID: "x"`.
pub fn require_uuid(what: &str, id: &str) -> Result<(), String> {
    if is_canonical_uuid(id) {
        Ok(())
    } else {
        Err(format!(
            "{what} that is not a canonical UUID: {:?}",
            shown(id)
        ))
    }
}

/// `Ok` when `owner` is a valid owner id; else why not, naming it as
/// `what` (`a customer id`): `a customer id that is required: ""`.
pub fn require_owner(what: &str, owner: &str) -> Result<(), String> {
    match token_problem(owner, MAX_OWNER_LEN) {
        Some(problem) => Err(format!("{what} that {problem}: {:?}", shown(owner))),
        None => Ok(()),
    }
}

/// The start of a value quoted in a reason (which ends up in a dead
/// letter's headers, whose size is bounded): at most 40 characters.
pub fn shown(value: &str) -> String {
    value.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_id_and_quote_its_start() {
        let id = "0190c5a2-7b1e-7c3d-9f00-123456789abc";
        assert_eq!(require_uuid("an order id", id), Ok(()));
        assert_eq!(
            require_uuid("an order id", "0190C5A2-7B1E-7C3D-9F00-123456789ABC"),
            Err(String::from(
                "an order id that is not a canonical UUID: \"0190C5A2-7B1E-7C3D-9F00-123456789ABC\""
            ))
        );
        assert_eq!(require_owner("a customer id", "c-1"), Ok(()));
        assert_eq!(
            require_owner("a customer id", ""),
            Err(String::from("a customer id that is required: \"\""))
        );
        assert_eq!(
            require_owner("a customer id", "a b"),
            Err(String::from(
                "a customer id that must not contain spaces or control characters: \"a b\""
            ))
        );
        let long = "x".repeat(MAX_OWNER_LEN + 1);
        let Err(reason) = require_owner("a customer id", &long) else {
            panic!("an owner id of {} characters is accepted", long.len())
        };
        assert!(
            reason.starts_with("a customer id that must be at most 128 characters: ")
                && reason.len() < 100,
            "{reason}"
        );
        assert_eq!(require_owner("a customer id", &long[1..]), Ok(()));
    }
}
