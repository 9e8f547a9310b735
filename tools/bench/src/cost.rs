//! What the measured window of the main phase cost: the broker's messages
//! and bytes (nats-server's `/varz`, see [`crate::monitor`]) and the CPU time
//! of the services and the broker (`/proc/<pid>/stat`), per saga completed in
//! the window and per CreateOrder answered in it.
//!
//! Both are read right before and right after the window (the warm-up is
//! outside it), so the figures are differences of counters and no per-event
//! bookkeeping is needed. The bench's own broker traffic is taken out: its
//! observer is a plain subscription on `orders.>`, so every event it
//! receives is one delivery (`out_msgs`, and its header and payload bytes)
//! that the broker would not make without the bench. The bench counts what
//! the observer received, at the same two instants, and subtracts it. The
//! bench's CreateOrders are gRPC calls to the order service, not NATS
//! messages, so they cost the broker nothing directly; what the order
//! service publishes for them is the system's cost and stays in.
//!
//! Nothing else of the bench is on the broker during the window: the
//! baseline's connection has finished before the main phase starts (its
//! stream is deleted and its client dropped), the observer's connection
//! publishes nothing (its PINGs are protocol, not messages), and reading
//! `/varz` is HTTP on the monitoring port, which no message counter sees.
//!
//! The observer's count lags the server's by the events still in the socket
//! when `/varz` is read, a few milliseconds' worth; the lag is about the same
//! at both ends of the window, so it cancels out of the difference.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    kinds::Kind,
    monitor::{MonitorUrl, Varz},
    saga::{Observed, SagaTracker},
    stats::round3,
};

/// The processes whose CPU time is read; a role may have several pids (their
/// times add up) or none (the role is left out of the report).
#[derive(Clone, Debug, Default)]
pub struct Pids {
    /// `--order-pid`.
    pub order_service: Vec<u32>,
    /// `--payment-pid`.
    pub payment_service: Vec<u32>,
    /// `--nats-pid`.
    pub nats_server: Vec<u32>,
}

impl Pids {
    fn is_empty(&self) -> bool {
        self.order_service.is_empty()
            && self.payment_service.is_empty()
            && self.nats_server.is_empty()
    }
}

/// One value per process role; roles whose pids are unknown are `None` and
/// left out of the JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PerProcess<T> {
    /// order-service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_service: Option<T>,
    /// payment-service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_service: Option<T>,
    /// nats-server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_server: Option<T>,
}

impl<T> PerProcess<T> {
    fn map<U>(&self, f: impl Fn(&T) -> U) -> PerProcess<U> {
        PerProcess {
            order_service: self.order_service.as_ref().map(&f),
            payment_service: self.payment_service.as_ref().map(&f),
            nats_server: self.nats_server.as_ref().map(&f),
        }
    }

    fn is_empty(&self) -> bool {
        self.order_service.is_none() && self.payment_service.is_none() && self.nats_server.is_none()
    }
}

/// The counters at one instant.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When the reading started.
    pub at: Instant,
    /// The broker's counters; `None` without a monitor URL or when the read
    /// failed (a warning says so).
    pub varz: Option<Varz>,
    /// What the bench's observer had received by then.
    pub observer: Observed,
    /// CPU time used so far by each known process.
    pub cpu: PerProcess<Duration>,
}

/// Takes [`Sample`]s: of the broker when its monitoring URL is known, of the
/// processes whose pids are known, and of the observer always.
#[derive(Debug)]
pub struct Sampler {
    monitor: Option<MonitorUrl>,
    pids: Pids,
    tracker: Arc<SagaTracker>,
}

impl Sampler {
    /// A sampler, or `None` when there is nothing to read besides the
    /// observer (no monitor URL, no pid).
    pub fn new(monitor: Option<MonitorUrl>, pids: Pids, tracker: Arc<SagaTracker>) -> Option<Self> {
        (monitor.is_some() || !pids.is_empty()).then_some(Self {
            monitor,
            pids,
            tracker,
        })
    }

    /// Reads everything now.
    pub async fn sample(&self) -> Sample {
        let at = Instant::now();
        let varz = match &self.monitor {
            Some(monitor) => match monitor.varz().await {
                Ok(varz) => Some(varz),
                Err(e) => {
                    eprintln!("warning: {e}; the report has no broker figures");
                    None
                }
            },
            None => None,
        };
        // Right after the broker's reading, so that both count up to about
        // the same instant.
        let observer = self.tracker.observed();
        let cpu = PerProcess {
            order_service: cpu_of(&self.pids.order_service),
            payment_service: cpu_of(&self.pids.payment_service),
            nats_server: cpu_of(&self.pids.nats_server),
        };
        Sample {
            at,
            varz,
            observer,
            cpu,
        }
    }
}

/// The CPU time of all of `pids` together; `None` for no pid, or when one of
/// them cannot be read (it exited): a partial sum would look like a cheap run.
fn cpu_of(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|pid| process_cpu(&pid.to_string()))
        .sum::<Option<Duration>>()
}

/// CPU time (user + system, all threads) that process `pid` (a number, or
/// `self`) has used so far, from `/proc/<pid>/stat`; `None` where there is
/// no procfs or no such process.
pub fn process_cpu(pid: &str) -> Option<Duration> {
    parse_stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime of a `/proc/<pid>/stat` line.
fn parse_stat_cpu(stat: &str) -> Option<Duration> {
    // The command name (field 2) may hold spaces and parentheses; count from
    // after its last `)`.
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks
    // of USER_HZ, which Linux fixes at 100 for everything it reports in /proc.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The broker's traffic between two samples, as counted by the server and
/// by the bench's observer, with what it was for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BrokerWindow {
    /// Seconds between the two readings.
    pub seconds: f64,
    /// `in_msgs` of `/varz` in the window: what clients published.
    pub in_msgs: u64,
    /// `out_msgs`: what clients received, the observer's deliveries included.
    pub out_msgs: u64,
    /// `in_bytes` (headers and payloads).
    pub in_bytes: u64,
    /// `out_bytes` (headers and payloads), the observer's included.
    pub out_bytes: u64,
    /// Events the bench's observer received in the window; subtracted from
    /// `out_msgs` in every per-saga and per-create figure.
    pub observer_msgs: u64,
    /// Their header and payload bytes; subtracted from `out_bytes`.
    pub observer_bytes: u64,
    /// Sagas completed in the window (final events seen in it).
    pub sagas: u64,
    /// CreateOrders answered in the window.
    pub creates: u64,
    /// The messages of the window by kind, as the tap saw them
    /// (`--by-kind`), the tap's and the observer's own deliveries not among
    /// them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_kind: Option<BTreeMap<&'static str, u64>>,
}

/// Broker traffic per unit of work (saga or CreateOrder), the bench's own
/// deliveries taken out.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BrokerPerUnit {
    /// In plus out.
    pub msgs: f64,
    /// Published by the services.
    pub in_msgs: f64,
    /// Delivered to the services.
    pub out_msgs: f64,
    /// Header and payload bytes published.
    pub in_bytes: f64,
    /// Header and payload bytes delivered.
    pub out_bytes: f64,
}

impl BrokerWindow {
    /// The window between `before` and `after`, if both read the broker.
    pub fn between(before: &Sample, after: &Sample, sagas: u64, creates: u64) -> Option<Self> {
        let delta = after.varz?.since(&before.varz?);
        Some(Self {
            seconds: round3(after.at.saturating_duration_since(before.at).as_secs_f64()),
            in_msgs: delta.in_msgs,
            out_msgs: delta.out_msgs,
            in_bytes: delta.in_bytes,
            out_bytes: delta.out_bytes,
            observer_msgs: after.observer.msgs.saturating_sub(before.observer.msgs),
            observer_bytes: after.observer.bytes.saturating_sub(before.observer.bytes),
            sagas,
            creates,
            by_kind: by_kind(before, after),
        })
    }

    /// [`Self::by_kind`] per one of `units`, with `unclassified`: what
    /// nats-server counted beyond the kinds the tap saw (messages on
    /// subjects it does not subscribe to); `None` without a tap or units.
    pub fn by_kind_per(&self, units: u64) -> Option<BTreeMap<&'static str, f64>> {
        let kinds = self.by_kind.as_ref()?;
        if units == 0 {
            return None;
        }
        let per = |n: u64| round3(n as f64 / units as f64);
        let seen: u64 = kinds.values().sum();
        let counted = self.in_msgs + self.out_msgs.saturating_sub(self.observer_msgs);
        let mut out: BTreeMap<&'static str, f64> =
            kinds.iter().map(|(name, n)| (*name, per(*n))).collect();
        out.insert("unclassified", per(counted.saturating_sub(seen)));
        Some(out)
    }

    /// The traffic per one of `units`; `None` for no units.
    pub fn per(&self, units: u64) -> Option<BrokerPerUnit> {
        if units == 0 {
            return None;
        }
        let per = |n: u64| round3(n as f64 / units as f64);
        let out_msgs = self.out_msgs.saturating_sub(self.observer_msgs);
        Some(BrokerPerUnit {
            msgs: per(self.in_msgs + out_msgs),
            in_msgs: per(self.in_msgs),
            out_msgs: per(out_msgs),
            in_bytes: per(self.in_bytes),
            out_bytes: per(self.out_bytes.saturating_sub(self.observer_bytes)),
        })
    }
}

/// The tap's counts by kind between two samples, by name; `None` unless it
/// counted at both.
fn by_kind(before: &Sample, after: &Sample) -> Option<BTreeMap<&'static str, u64>> {
    let delta = after.observer.kinds?.since(&before.observer.kinds?);
    Some(
        Kind::ALL
            .iter()
            .zip(delta.0)
            .map(|(kind, n)| (kind.name(), n))
            .collect(),
    )
}

/// CPU time each known process used between two samples; a role is `None`
/// when either sample could not read it.
pub fn cpu_between(before: &Sample, after: &Sample) -> PerProcess<Duration> {
    let delta = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
    PerProcess {
        order_service: delta(before.cpu.order_service, after.cpu.order_service),
        payment_service: delta(before.cpu.payment_service, after.cpu.payment_service),
        nats_server: delta(before.cpu.nats_server, after.cpu.nats_server),
    }
}

/// CPU microseconds per one of `units`; `None` for no units or no process.
pub fn cpu_per(cpu: &PerProcess<Duration>, units: u64) -> Option<PerProcess<f64>> {
    if units == 0 || cpu.is_empty() {
        return None;
    }
    Some(cpu.map(|d| (d.as_secs_f64() * 1e6 / units as f64).round()))
}

/// What the main phase's window cost.
#[derive(Clone, Debug)]
pub struct WindowCost {
    /// The broker's traffic, when its monitor was read at both ends.
    pub broker: Option<BrokerWindow>,
    /// CPU time of the known processes.
    pub cpu: PerProcess<Duration>,
    /// Sagas completed in the window.
    pub sagas: u64,
    /// CreateOrders answered in the window.
    pub creates: u64,
}

impl WindowCost {
    /// The cost between two samples of a window in which `sagas` completed
    /// and `creates` were answered.
    pub fn new(before: &Sample, after: &Sample, sagas: u64, creates: u64) -> Self {
        Self {
            broker: BrokerWindow::between(before, after, sagas, creates),
            cpu: cpu_between(before, after),
            sagas,
            creates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, varz: Option<Varz>, observer: (u64, u64), cpu_ms: [u64; 3]) -> Sample {
        let ms = |v: u64| Some(Duration::from_millis(v));
        Sample {
            at,
            varz,
            observer: Observed {
                msgs: observer.0,
                bytes: observer.1,
                kinds: None,
            },
            cpu: PerProcess {
                order_service: ms(cpu_ms[0]),
                payment_service: ms(cpu_ms[1]),
                nats_server: ms(cpu_ms[2]),
            },
        }
    }

    #[test]
    fn per_saga_traffic_leaves_out_the_observers_deliveries() {
        let t0 = Instant::now();
        let before = sample(
            t0,
            Some(Varz {
                in_msgs: 5_000,
                out_msgs: 7_000,
                in_bytes: 1_000_000,
                out_bytes: 2_000_000,
            }),
            (300, 90_000),
            [0; 3],
        );
        // 1,000 sagas: 18,000 messages in, 18,000 out to the services and
        // 3,000 more to the observer (3 events per saga of 300 bytes each).
        let after = sample(
            t0 + Duration::from_secs(2),
            Some(Varz {
                in_msgs: 5_000 + 18_000,
                out_msgs: 7_000 + 18_000 + 3_000,
                in_bytes: 1_000_000 + 4_500_000,
                out_bytes: 2_000_000 + 5_000_000 + 900_000,
            }),
            (300 + 3_000, 90_000 + 900_000),
            [0; 3],
        );
        let window = BrokerWindow::between(&before, &after, 1_000, 1_250);
        let Some(window) = window else {
            panic!("both samples read the broker, yet there is no window");
        };
        assert_eq!(window.seconds, 2.0);
        assert_eq!((window.in_msgs, window.out_msgs), (18_000, 21_000));
        assert_eq!(
            (window.observer_msgs, window.observer_bytes),
            (3_000, 900_000)
        );
        assert_eq!(
            window.per(window.sagas),
            Some(BrokerPerUnit {
                msgs: 36.0,
                in_msgs: 18.0,
                out_msgs: 18.0,
                in_bytes: 4_500.0,
                out_bytes: 5_000.0,
            })
        );
        assert_eq!(window.per(window.creates).map(|p| p.msgs), Some(28.8));
        assert_eq!(window.per(0), None);
    }

    #[test]
    fn by_kind_shares_add_up_to_the_servers_count() {
        let t0 = Instant::now();
        let varz = |in_msgs, out_msgs| {
            Some(Varz {
                in_msgs,
                out_msgs,
                in_bytes: 0,
                out_bytes: 0,
            })
        };
        let mut before = sample(t0, varz(0, 0), (0, 0), [0; 3]);
        let mut after = sample(
            t0 + Duration::from_secs(1),
            varz(1_100, 3_000),
            (2_000, 0),
            [0; 3],
        );
        // 100 sagas: the tap saw 1,000 appends and 1,000 acks of them (its
        // 2,000 copies are the observer's share); nats-server also counted
        // 100 messages in that the tap did not see.
        let mut kinds = crate::kinds::Counts::default();
        before.observer.kinds = Some(kinds);
        kinds.0[0] = 1_000;
        kinds.0[1] = 1_000;
        after.observer.kinds = Some(kinds);
        let Some(window) = BrokerWindow::between(&before, &after, 100, 100) else {
            panic!("both samples read the broker, yet there is no window");
        };
        let Some(per_saga) = window.by_kind_per(window.sagas) else {
            panic!("both samples had counts by kind, yet there are none per saga");
        };
        assert_eq!(per_saga.get("appends"), Some(&10.0));
        assert_eq!(per_saga.get("append_acks"), Some(&10.0));
        assert_eq!(per_saga.get("deliveries"), Some(&0.0));
        assert_eq!(per_saga.get("unclassified"), Some(&1.0));
        let total: f64 = per_saga.values().sum();
        assert_eq!(Some(total), window.per(window.sagas).map(|p| p.msgs));
        after.observer.kinds = None;
        let untapped = BrokerWindow::between(&before, &after, 100, 100);
        assert_eq!(untapped.and_then(|w| w.by_kind_per(w.sagas)), None);
    }

    #[test]
    fn no_window_without_both_broker_readings() {
        let t0 = Instant::now();
        let read = sample(t0, Some(Varz::default()), (0, 0), [0; 3]);
        let failed = sample(t0, None, (0, 0), [0; 3]);
        assert_eq!(BrokerWindow::between(&read, &failed, 1, 1), None);
        assert_eq!(BrokerWindow::between(&failed, &read, 1, 1), None);
    }

    #[test]
    fn cpu_per_saga_of_the_known_processes_only() {
        let t0 = Instant::now();
        let mut before = sample(t0, None, (0, 0), [1_000, 2_000, 3_000]);
        let after = sample(t0, None, (0, 0), [1_500, 2_300, 3_400]);
        // The payment service's pid was not given.
        before.cpu.payment_service = None;
        let cpu = cpu_between(&before, &after);
        assert_eq!(
            cpu_per(&cpu, 1_000),
            Some(PerProcess {
                order_service: Some(500.0),
                payment_service: None,
                nats_server: Some(400.0),
            })
        );
        let json = serde_json::to_string(&cpu_per(&cpu, 1_000)).unwrap_or_default();
        assert_eq!(json, r#"{"order_service":500.0,"nats_server":400.0}"#);
        assert_eq!(cpu_per(&cpu, 0), None);
        assert_eq!(cpu_per(&PerProcess::default(), 1_000), None);
    }

    #[test]
    fn stat_lines_with_odd_command_names() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...
        let line = "4242 (tokio) (rt x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_stat_cpu(line), Some(Duration::from_millis(3_250)));
        assert_eq!(parse_stat_cpu("4242 (short) S 1 2"), None);
        assert!(process_cpu("self").is_some());
        assert_eq!(cpu_of(&[]), None);
        assert_eq!(cpu_of(&[u32::MAX]), None);
    }
}
