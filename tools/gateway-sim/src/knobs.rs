//! The fault knobs (latency, transient failures, lost answers, the decline
//! threshold, outages), set at start from flags or the environment and
//! changed at runtime through `POST /control`, and the seeded random source
//! they draw from.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

/// The knobs a gateway starts with.
#[derive(Clone, Debug, PartialEq)]
pub struct Knobs {
    /// Added to every charge and refund before it is handled.
    pub latency: Duration,
    /// Up to this much more, uniformly drawn per call.
    pub jitter: Duration,
    /// Fraction (0 to 1) of calls answered 503 without being handled.
    pub failure_rate: f64,
    /// Fraction (0 to 1) of calls handled and recorded, then answered 503
    /// as if the answer was lost on the way back.
    pub lost_answer_rate: f64,
    /// Charges above this many minor units are declined (and recorded).
    pub decline_above_minor: u64,
    /// Every charge and refund is answered 503 while this holds.
    pub outage: Outage,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            failure_rate: 0.0,
            lost_answer_rate: 0.0,
            decline_above_minor: DEFAULT_DECLINE_ABOVE_MINOR,
            outage: Outage::Off,
        }
    }
}

/// 10 000.00 of a two-decimal currency: the payment service's built-in
/// simulator declines above 10 000 units by default too.
pub const DEFAULT_DECLINE_ABOVE_MINOR: u64 = 1_000_000;

/// Whether the gateway is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// Up.
    Off,
    /// Down until switched off.
    On,
    /// Down until this instant.
    Until(Instant),
}

impl Knobs {
    /// Whether the gateway is down at `now`.
    pub fn in_outage(&self, now: Instant) -> bool {
        match self.outage {
            Outage::Off => false,
            Outage::On => true,
            Outage::Until(end) => now < end,
        }
    }

    /// What `GET /control` answers.
    pub fn view(&self, now: Instant) -> KnobsView {
        KnobsView {
            latency_ms: millis(self.latency),
            jitter_ms: millis(self.jitter),
            failure_rate: self.failure_rate,
            lost_answer_rate: self.lost_answer_rate,
            decline_above_minor: self.decline_above_minor,
            outage: self.in_outage(now),
            outage_remaining_ms: match self.outage {
                Outage::Until(end) if now < end => Some(millis(end - now)),
                _ => None,
            },
        }
    }

    /// Applies a `POST /control` body: an object of the fields to change.
    /// Nothing changes unless every field is valid; the error names the
    /// first bad field.
    pub fn apply(&mut self, body: &Map<String, Value>, now: Instant) -> Result<(), FieldError> {
        let mut next = self.clone();
        for (field, value) in body {
            match field.as_str() {
                "latency_ms" => next.latency = Duration::from_millis(whole(field, value)?),
                "jitter_ms" => next.jitter = Duration::from_millis(whole(field, value)?),
                "failure_rate" => next.failure_rate = rate(field, value)?,
                "lost_answer_rate" => next.lost_answer_rate = rate(field, value)?,
                "decline_above_minor" => next.decline_above_minor = whole(field, value)?,
                "outage" => {
                    next.outage = match value.as_bool() {
                        Some(true) => Outage::On,
                        Some(false) => Outage::Off,
                        None => return Err(FieldError::new(field, "expected true or false")),
                    }
                }
                "outage_secs" => {
                    let secs = whole(field, value)?;
                    next.outage = if secs == 0 {
                        Outage::Off
                    } else {
                        Outage::Until(now + Duration::from_secs(secs))
                    };
                }
                _ => return Err(FieldError::new(field, "is not a knob")),
            }
        }
        if body.contains_key("outage") && body.contains_key("outage_secs") {
            return Err(FieldError::new(
                "outage_secs",
                "give either outage or outage_secs",
            ));
        }
        *self = next;
        Ok(())
    }
}

/// The knobs as JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KnobsView {
    /// Fixed latency.
    pub latency_ms: u64,
    /// Maximum jitter on top.
    pub jitter_ms: u64,
    /// Transient failure rate.
    pub failure_rate: f64,
    /// Lost answer rate.
    pub lost_answer_rate: f64,
    /// Decline threshold.
    pub decline_above_minor: u64,
    /// Down now.
    pub outage: bool,
    /// How long a timed outage still lasts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage_remaining_ms: Option<u64>,
}

/// A bad field of a request, answered 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field (or header) at fault.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// `field` is wrong because `message`.
    pub fn new(field: &str, message: &str) -> Self {
        Self {
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn whole(field: &str, value: &Value) -> Result<u64, FieldError> {
    value
        .as_u64()
        .ok_or_else(|| FieldError::new(field, "expected a whole number of at least 0"))
}

fn rate(field: &str, value: &Value) -> Result<f64, FieldError> {
    match value.as_f64() {
        Some(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(FieldError::new(field, "expected a number from 0 to 1")),
    }
}

/// SplitMix64: small, fast and reproducible from a seed, which is all a
/// fault simulator needs (no cryptographic claim).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in [0, max].
    pub fn up_to(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.next_u64() % nanos.saturating_add(1).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_control_field_changes_nothing_and_is_named() {
        let mut knobs = Knobs::default();
        let body = serde_json::json!({"latency_ms": 5, "failure_rate": 2.0});
        let Some(body) = body.as_object() else {
            panic!("an object")
        };
        let error = knobs.apply(body, Instant::now());
        assert_eq!(
            error.map_err(|e| e.field),
            Err(String::from("failure_rate"))
        );
        assert_eq!(knobs, Knobs::default());
    }

    #[test]
    fn a_timed_outage_ends_by_itself() -> Result<(), FieldError> {
        let mut knobs = Knobs::default();
        let now = Instant::now();
        let body = serde_json::json!({"outage_secs": 2});
        let body = body.as_object().cloned().unwrap_or_default();
        knobs.apply(&body, now)?;
        assert!(knobs.in_outage(now + Duration::from_secs(1)));
        assert!(!knobs.in_outage(now + Duration::from_secs(2)));
        Ok(())
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let draws = |r: &mut Rng| (0..32).map(|_| r.chance(0.5)).collect::<Vec<_>>();
        assert_eq!(draws(&mut a), draws(&mut b));
    }
}
