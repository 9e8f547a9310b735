//! The faults of a run, drawn from its seed before it starts: the same seed
//! gives the same schedule, whatever the machine's speed.
//!
//! Faults overlap, as real outages do, within two limits that keep every
//! fault survivable by design: at most one NATS node is impaired (killed,
//! paused or partitioned) at a time, since R3 streams keep a quorum with
//! one node gone; and a process takes one fault at a time.

use std::{fmt, time::Duration};

use orderflow_gateway_sim::knobs::Rng;
use serde::Serialize;

/// A process of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Target {
    /// NATS node `i`.
    Nats(usize),
    /// Order-service replica `i`.
    Order(usize),
    /// Payment-service replica `i`.
    Payment(usize),
    /// The gateway simulator.
    Gateway,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Nats(i) => write!(f, "nats-{i}"),
            Target::Order(i) => write!(f, "order-{i}"),
            Target::Payment(i) => write!(f, "payment-{i}"),
            Target::Gateway => f.write_str("gateway"),
        }
    }
}

/// Which service a rolling restart goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Service {
    /// Both order-service replicas.
    Order,
    /// Both payment-service replicas.
    Payment,
}

/// One fault, with how long it lasts.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL, then a restart after `down`.
    Kill {
        /// The process.
        target: Target,
        /// How long it stays dead.
        down: Duration,
    },
    /// SIGSTOP, then SIGCONT after `paused` (longer than the ack wait).
    Pause {
        /// The process.
        target: Target,
        /// How long it is stopped.
        paused: Duration,
    },
    /// SIGTERM of each replica in turn, each restarted and healthy before
    /// the next.
    Rolling {
        /// The service.
        service: Service,
    },
    /// NATS node `node` cut from the others and from its clients.
    Partition {
        /// The node.
        node: usize,
        /// Until it heals.
        cut: Duration,
    },
    /// Every gateway call answered 503.
    GatewayOutage {
        /// How long.
        outage: Duration,
    },
    /// Every gateway call slowed.
    GatewaySlow {
        /// Added latency.
        latency: Duration,
        /// How long.
        slow: Duration,
    },
}

impl Fault {
    /// The kind's name, as the report counts it.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill {
                target: Target::Nats(_),
                ..
            } => "kill nats",
            Fault::Kill {
                target: Target::Gateway,
                ..
            } => "kill gateway",
            Fault::Kill { .. } => "kill service",
            Fault::Pause { .. } => "pause",
            Fault::Rolling { .. } => "rolling restart",
            Fault::Partition { .. } => "partition",
            Fault::GatewayOutage { .. } => "gateway outage",
            Fault::GatewaySlow { .. } => "gateway slow",
        }
    }
}

/// A fault and when it starts, from the start of the fault period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Planned {
    /// When it starts.
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

/// The knobs the schedule is drawn with.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// NATS nodes.
    pub nodes: usize,
    /// Replicas of each service.
    pub replicas: usize,
    /// The services' ack wait: a pause lasts longer.
    pub ack_wait: Duration,
}

/// The faults of a run of `seconds` drawn from `seed`.
pub fn draw(seed: u64, seconds: u64, shape: Shape) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    let end = Duration::from_secs(seconds);
    let mut busy: Vec<(Target, Duration)> = Vec::new();
    let mut nats_busy_until = Duration::ZERO;
    let mut gateway_knob_until = Duration::ZERO;
    let mut planned = Vec::new();
    let mut at = between(&mut rng, 1_000, 3_000);
    while at < end {
        for _ in 0..8 {
            let fault = pick(&mut rng, shape);
            let (targets, lasts) = footprint(&fault, shape);
            let nats = targets.iter().any(|t| matches!(t, Target::Nats(_)));
            let knob = matches!(
                fault,
                Fault::GatewayOutage { .. } | Fault::GatewaySlow { .. }
            );
            let free = targets
                .iter()
                .all(|t| busy.iter().all(|(b, until)| b != t || *until <= at))
                && (!nats || nats_busy_until <= at)
                && (!knob || gateway_knob_until <= at);
            if free {
                let until = at + lasts;
                busy.extend(targets.iter().map(|t| (*t, until)));
                if nats {
                    nats_busy_until = until;
                }
                if knob {
                    gateway_knob_until = until;
                }
                planned.push(Planned { at, fault });
                break;
            }
        }
        at += between(&mut rng, 1_500, 5_000);
    }
    planned
}

fn pick(rng: &mut Rng, shape: Shape) -> Fault {
    let any_process = |rng: &mut Rng| -> Target {
        let choices = shape.nodes + 2 * shape.replicas + 1;
        let n = below(rng, choices);
        if n < shape.nodes {
            Target::Nats(n)
        } else if n < shape.nodes + shape.replicas {
            Target::Order(n - shape.nodes)
        } else if n < shape.nodes + 2 * shape.replicas {
            Target::Payment(n - shape.nodes - shape.replicas)
        } else {
            Target::Gateway
        }
    };
    let ack_wait = u64::try_from(shape.ack_wait.as_millis()).unwrap_or(5_000);
    match below(rng, 100) {
        0..30 => Fault::Kill {
            target: any_process(rng),
            down: between(rng, 500, 5_000),
        },
        30..48 => Fault::Pause {
            target: any_process(rng),
            paused: between(rng, ack_wait + 1_000, ack_wait + 4_000),
        },
        48..63 => Fault::Partition {
            node: below(rng, shape.nodes),
            cut: between(rng, 4_000, 12_000),
        },
        63..73 => Fault::Rolling {
            service: if rng.chance(0.5) {
                Service::Order
            } else {
                Service::Payment
            },
        },
        73..88 => Fault::GatewayOutage {
            outage: between(rng, 2_000, 8_000),
        },
        _ => Fault::GatewaySlow {
            latency: between(rng, 300, 1_500),
            slow: between(rng, 3_000, 10_000),
        },
    }
}

/// The processes a fault holds and for how long (a rolling restart's
/// length is a generous estimate: it waits for health between replicas).
fn footprint(fault: &Fault, shape: Shape) -> (Vec<Target>, Duration) {
    match fault {
        Fault::Kill { target, down } => (vec![*target], *down + Duration::from_secs(3)),
        Fault::Pause { target, paused } => (vec![*target], *paused + Duration::from_secs(1)),
        Fault::Partition { node, cut } => {
            (vec![Target::Nats(*node)], *cut + Duration::from_secs(3))
        }
        Fault::Rolling { service } => {
            let replica = |i| match service {
                Service::Order => Target::Order(i),
                Service::Payment => Target::Payment(i),
            };
            let per = Duration::from_secs(10);
            let replicas = u32::try_from(shape.replicas).unwrap_or(2);
            ((0..shape.replicas).map(replica).collect(), per * replicas)
        }
        Fault::GatewayOutage { outage } => (Vec::new(), *outage),
        Fault::GatewaySlow { slow, .. } => (Vec::new(), *slow),
    }
}

fn below(rng: &mut Rng, n: usize) -> usize {
    let n64 = u64::try_from(n.max(1)).unwrap_or(1);
    usize::try_from(rng.next_u64() % n64).unwrap_or(0)
}

fn between(rng: &mut Rng, low_ms: u64, high_ms: u64) -> Duration {
    let span = high_ms.saturating_sub(low_ms).max(1);
    Duration::from_millis(low_ms + rng.next_u64() % span)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        nodes: 3,
        replicas: 2,
        ack_wait: Duration::from_secs(5),
    };

    #[test]
    fn a_seed_gives_one_schedule() {
        assert_eq!(draw(7, 300, SHAPE), draw(7, 300, SHAPE));
        assert_ne!(draw(7, 300, SHAPE), draw(8, 300, SHAPE));
    }

    #[test]
    fn never_two_nats_nodes_impaired_at_once() {
        for seed in 0..50 {
            let mut until = Duration::ZERO;
            for planned in draw(seed, 600, SHAPE) {
                let (targets, lasts) = footprint(&planned.fault, SHAPE);
                if targets.iter().any(|t| matches!(t, Target::Nats(_))) {
                    assert!(planned.at >= until, "seed {seed}: {planned:?} overlaps");
                    until = planned.at + lasts;
                }
            }
        }
    }

    #[test]
    fn every_kind_is_drawn_in_a_long_run() {
        let kinds: std::collections::BTreeSet<&str> = draw(1, 1_800, SHAPE)
            .iter()
            .map(|p| p.fault.kind())
            .collect();
        assert_eq!(kinds.len(), 8, "{kinds:?}");
    }
}
