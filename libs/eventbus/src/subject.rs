//! The subject layout: where an aggregate's events, replays and dead
//! letters go, and which aggregate a subject belongs to.
//!
//! An aggregate's events go to `<prefix>.<owner>.<id>.<event>`, a replayed
//! dead letter to its original subject plus [`REPLAY_TOKEN`], and dead
//! letters to [`DEAD_LETTER_STREAM`]. The aggregate store, the envelope,
//! the consumer, the dead-letter admin and the stream set-up all need some
//! of this; it is a module of its own, depending on none of them, so that
//! none of them has to import another for a name.

/// The stream that keeps dead letters, and its subject prefix.
pub const DEAD_LETTER_STREAM: &str = "DEADLETTERS";
/// Dead letters are published on `deadletter.<stream>.<consumer>`
/// ([`dead_letter_subject`]).
pub const DEAD_LETTER_SUBJECTS: &str = "deadletter.>";

/// Where a message that consumer `consumer` of stream `stream` gave up on
/// is kept.
pub fn dead_letter_subject(stream: &str, consumer: &str) -> String {
    format!("deadletter.{stream}.{consumer}")
}

/// The dead letters of `consumer` (on any stream), or all of them.
pub fn dead_letter_filter(consumer: Option<&str>) -> String {
    match consumer {
        Some(consumer) => format!("deadletter.*.{consumer}"),
        None => DEAD_LETTER_SUBJECTS.to_owned(),
    }
}

/// The stream that keeps JetStream's max-deliveries advisories until the
/// consumer's owner has dead-lettered the message each one names (see
/// `consumer::MaxDeliveries`): JetStream publishes an advisory once, as a
/// core message, so without a stream it is lost whenever no replica of the
/// owner is up to hear it.
pub const ADVISORY_STREAM: &str = "ADVISORIES";
/// The subjects of [`ADVISORY_STREAM`]: every consumer's max-deliveries
/// advisory, `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`.
/// The stream keeps a message only while a consumer of it is interested, so
/// advisories of consumers nobody watches are not kept.
pub const ADVISORY_SUBJECTS: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>";

/// The subject on which JetStream announces that consumer `consumer` of
/// stream `stream` reached its max deliveries for a message.
pub fn max_deliveries_subject(stream: &str, consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}")
}

/// The durable consumer of [`ADVISORY_STREAM`] that dead-letters what
/// durable consumer `consumer` gave up on without a settle.
pub fn max_deliveries_durable(consumer: &str) -> String {
    format!("{consumer}-max-deliveries")
}

/// The durable consumer that receives the replays of what durable consumer
/// `consumer` receives (`ConsumerSpec::replays`).
pub fn replays_durable(consumer: &str) -> String {
    format!("{consumer}-replays")
}

/// The token appended to a dead letter's original subject to replay it.
/// Durable consumers receive replays of the subjects they receive
/// (`ConsumerSpec::replays`), and an aggregate's own subjects
/// (`<prefix>.<owner>.<id>.<event>`) never match a replay's.
pub const REPLAY_TOKEN: &str = "replay";

/// Where a dead letter first published on `original` is replayed:
/// `<original>.replay`, or `original` itself when that is a replay already
/// (a replay that was dead-lettered in turn goes back where replays go, not
/// to a `.replay.replay` no consumer receives).
pub fn replay_subject(original: &str) -> String {
    if is_replay(original) {
        original.to_owned()
    } else {
        format!("{original}.{REPLAY_TOKEN}")
    }
}

/// Whether `subject` is a replay's (its last token is [`REPLAY_TOKEN`]).
pub fn is_replay(subject: &str) -> bool {
    subject
        .strip_suffix(REPLAY_TOKEN)
        .is_some_and(|rest| rest.ends_with('.'))
}

/// The subject token of an owner id: the id itself where it is made of
/// ASCII letters, digits, `-` and `_` (`orders.c-1.>` is one customer's
/// orders), and every other byte of its UTF-8 written `~XX` in upper-case
/// hex (`a.b` is `a~2Eb`, `~` itself `~7E`).
///
/// Owner ids may hold any character but spaces and control characters,
/// `.`, `*` and `>` among them, which would split a subject or make it a
/// wildcard; the escape keeps every token one plain subject token, and the
/// mapping one-to-one, so one owner's filter never matches another's
/// subjects.
pub fn owner_token(owner: &str) -> String {
    use std::fmt::Write;
    let mut token = String::with_capacity(owner.len());
    for byte in owner.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            token.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(token, "~{byte:02X}");
        }
    }
    token
}

/// The subject of `event` on aggregate `id` of `owner`.
pub fn event_subject(prefix: &str, owner: &str, id: &str, event: &str) -> String {
    format!("{prefix}.{}.{id}.{event}", owner_token(owner))
}

/// Every subject of aggregate `id` of `owner`: what optimistic concurrency
/// guards and what its current state is read from.
pub fn aggregate_filter(prefix: &str, owner: &str, id: &str) -> String {
    format!("{prefix}.{}.{id}.*", owner_token(owner))
}

/// Where timer `timer` of aggregate `id` of `owner` is scheduled:
/// `<prefix>.<owner>.<id>.<timer>.scheduled`. Five tokens, so no
/// aggregate filter (`<prefix>.<owner>.<id>.*`) matches it: a timer is never
/// an aggregate's last event, and appends never conflict with it.
pub fn schedule_subject(prefix: &str, owner: &str, id: &str, timer: &str) -> String {
    format!("{prefix}.{}.{id}.{timer}.scheduled", owner_token(owner))
}

/// Where timer `timer` of aggregate `id` of `owner` fires:
/// `<prefix>.~<timer>.<owner>.<id>.fired`, under a second token no owner
/// token can be (an owner token's `~` is always followed by two upper-case
/// hex digits).
///
/// The firings of a timer share a literal prefix so that the consumer
/// acting on them has one filter subject, `<prefix>.~<timer>.>`, which also
/// takes their replays: nats-server 2.15.1 matches a consumer with several
/// filter subjects against the stream's whole subject index each time it
/// looks for its next message, and an idle consumer filtering
/// `<prefix>.*.*.<timer>.fired` and its replays cost the server about 6 %
/// of its CPU under load (`perf`, docs/benchmarks.md). No filter of an
/// owner's or an aggregate's subjects matches it, nor do the four-token
/// filters of events.
pub fn fired_subject(prefix: &str, owner: &str, id: &str, timer: &str) -> String {
    format!("{prefix}.~{timer}.{}.{id}.fired", owner_token(owner))
}

/// Every firing of timer `timer` of every aggregate, and their replays: a
/// consumer's one filter subject.
pub fn fired_filter(prefix: &str, timer: &str) -> String {
    format!("{prefix}.~{timer}.>")
}

/// Every subject of aggregate `id`, whatever its owner.
pub fn any_owner_filter(prefix: &str, id: &str) -> String {
    format!("{prefix}.*.{id}.*")
}

/// The aggregate a subject belongs to: its first three tokens,
/// `<prefix>.<owner>.<id>`, without the event token (and without the
/// `.replay` of a replayed dead letter). Consumers keep each aggregate's
/// events in order by it.
pub fn aggregate_key(subject: &str) -> &str {
    match subject.match_indices('.').nth(2) {
        Some((end, _)) => &subject[..end],
        None => subject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owner id a subject token stands for, or `None` when the token is
    /// not one `owner_token` makes: the inverse the round trip is checked
    /// against.
    pub fn owner_of_token(token: &str) -> Option<String> {
        let mut bytes = Vec::with_capacity(token.len());
        let mut rest = token.as_bytes();
        while let Some((&first, tail)) = rest.split_first() {
            if first == b'~' {
                let hex = tail.get(..2)?;
                let text = std::str::from_utf8(hex).ok()?;
                let byte = u8::from_str_radix(text, 16).ok()?;
                // Only the bytes owner_token escapes, in its spelling.
                if byte.is_ascii_alphanumeric()
                    || byte == b'-'
                    || byte == b'_'
                    || text != text.to_uppercase()
                {
                    return None;
                }
                bytes.push(byte);
                rest = &tail[2..];
            } else if first.is_ascii_alphanumeric() || first == b'-' || first == b'_' {
                bytes.push(first);
                rest = tail;
            } else {
                return None;
            }
        }
        String::from_utf8(bytes).ok()
    }

    #[test]
    fn a_timer_fires_outside_every_owners_and_aggregates_subjects() {
        let fired = fired_subject("orders", "c-1", "id", "payment-deadline");
        assert_eq!(fired, "orders.~payment-deadline.c-1.id.fired");
        let schedule = schedule_subject("orders", "c-1", "id", "payment-deadline");
        assert_eq!(schedule, "orders.c-1.id.payment-deadline.scheduled");
        let matches = |filter: &str, subject: &str| {
            let (f, s): (Vec<_>, Vec<_>) =
                (filter.split('.').collect(), subject.split('.').collect());
            f.iter().enumerate().all(|(i, t)| match *t {
                ">" => s.len() > i,
                "*" => i < s.len(),
                t => s.get(i) == Some(&t),
            }) && (f.last() == Some(&">") || f.len() == s.len())
        };
        let filter = fired_filter("orders", "payment-deadline");
        assert!(matches(&filter, &fired));
        assert!(matches(&filter, &format!("{fired}.{REPLAY_TOKEN}")));
        assert!(!matches(&filter, &schedule));
        for subject in [&fired, &schedule] {
            assert!(!matches(&aggregate_filter("orders", "c-1", "id"), subject));
            assert!(!matches("orders.*.*.*", subject));
        }
        // No owner's token is the firings' second token.
        for owner in ["~payment-deadline", "~pa", "~"] {
            assert_ne!(owner_token(owner), "~payment-deadline");
        }
    }

    #[test]
    fn a_replay_is_replayed_where_replays_go() {
        let created = "orders.c-1.id.created";
        assert_eq!(replay_subject(created), "orders.c-1.id.created.replay");
        assert_eq!(
            replay_subject("orders.c-1.id.created.replay"),
            "orders.c-1.id.created.replay"
        );
        assert!(is_replay("orders.c-1.id.created.replay"));
        // A customer or an order id spelled "replay" is no replay.
        assert!(!is_replay("orders.c-1.replay.created"));
        assert!(!is_replay("orders.c-1.id.nonreplay"));
    }

    #[test]
    fn owner_tokens_round_trip_and_never_split_a_subject() {
        for owner in [
            "c-1",
            "a.b.c",
            "x_y-z.",
            ".",
            "a~b",
            "*",
            ">",
            "é€😀",
            "a@b.com",
        ] {
            let token = owner_token(owner);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')),
                "{token}"
            );
            assert_eq!(owner_of_token(&token).as_deref(), Some(owner));
        }
        assert_ne!(owner_token("a.b"), owner_token("a~b"), "one-to-one");
        assert_eq!(owner_token("c-1"), "c-1", "plain ids stay readable");
        for foreign in ["a.b", "a~", "a~2", "a~2e", "a~41", "a*"] {
            assert_eq!(owner_of_token(foreign), None, "{foreign}");
        }
        assert_eq!(
            event_subject("orders", "a.b", "id-1", "created"),
            "orders.a~2Eb.id-1.created"
        );
        assert_eq!(aggregate_filter("orders", "c-1", "id"), "orders.c-1.id.*");
        assert_eq!(aggregate_key("orders.c-1.id.created"), "orders.c-1.id");
        assert_eq!(
            aggregate_key("orders.c-1.id.created.replay"),
            "orders.c-1.id"
        );
        assert_eq!(aggregate_key("orders.c-1"), "orders.c-1");
    }
}
