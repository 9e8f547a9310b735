//! The payment service's configuration: the common variables, which gateway
//! (an HTTP one at `GATEWAY_URL`, or the built-in simulator), the simulator's
//! behaviour and the gateway client's resilience settings.

use std::time::Duration;

use orderflow_platform::{
    config::{ConfigError, EnvReader, Lookup, Var},
    service_config::{CommonConfig, ServiceConfig, common_vars},
};

/// `GRPC_ADDR` of the payment service.
pub const GRPC_ADDR: Var = Var {
    name: "GRPC_ADDR",
    default: Some("0.0.0.0:50052"),
    help: "address the gRPC server listens on",
};
/// `GATEWAY_URL`.
pub const GATEWAY_URL: Var = Var {
    name: "GATEWAY_URL",
    default: None,
    help: "base URL (http://host:port) of an HTTP card gateway such as tools/gateway-sim; unset: the built-in simulator (SIM_*)",
};
/// `SIM_DECLINE_ABOVE_UNITS`.
pub const SIM_DECLINE_ABOVE_UNITS: Var = Var {
    name: "SIM_DECLINE_ABOVE_UNITS",
    default: Some("10000"),
    help: "simulated gateway: decline any charge above this many currency units",
};
/// `SIM_LATENCY_MS`.
pub const SIM_LATENCY_MS: Var = Var {
    name: "SIM_LATENCY_MS",
    default: Some("0"),
    help: "simulated gateway: added latency of every call, in milliseconds",
};
/// `SIM_FAILURE_RATE`.
pub const SIM_FAILURE_RATE: Var = Var {
    name: "SIM_FAILURE_RATE",
    default: Some("0"),
    help: "simulated gateway: fraction (0 to 1) of calls failing with a transient error",
};
/// `GATEWAY_TIMEOUT_MS`.
pub const GATEWAY_TIMEOUT_MS: Var = Var {
    name: "GATEWAY_TIMEOUT_MS",
    default: Some("2000"),
    help: "longest wait for one gateway call attempt, in milliseconds",
};
/// `GATEWAY_MAX_ATTEMPTS`.
pub const GATEWAY_MAX_ATTEMPTS: Var = Var {
    name: "GATEWAY_MAX_ATTEMPTS",
    default: Some("3"),
    help: "attempts per gateway call (transient errors and timeouts are retried)",
};
/// `GATEWAY_BREAKER_FAILURES`.
pub const GATEWAY_BREAKER_FAILURES: Var = Var {
    name: "GATEWAY_BREAKER_FAILURES",
    default: Some("5"),
    help: "consecutive failed gateway calls that open the circuit breaker",
};
/// `GATEWAY_BREAKER_OPEN_MS`.
pub const GATEWAY_BREAKER_OPEN_MS: Var = Var {
    name: "GATEWAY_BREAKER_OPEN_MS",
    default: Some("5000"),
    help: "how long an open breaker rejects calls before letting one probe through, in milliseconds",
};

/// The simulated gateway's behaviour.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// Charges above this many units are declined.
    pub decline_above_units: u64,
    /// Latency of every call.
    pub latency: Duration,
    /// Fraction of calls that fail transiently.
    pub failure_rate: f64,
}

/// How the gateway is called.
#[derive(Clone, Debug)]
pub struct ResilienceConfig {
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts per call.
    pub max_attempts: u32,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open.
    pub breaker_open: Duration,
}

/// Settings of the payment service.
#[derive(Clone, Debug)]
pub struct Config {
    /// Settings every service has.
    pub common: CommonConfig,
    /// The HTTP gateway's base URL; `None` runs the built-in simulator.
    pub gateway_url: Option<http::Uri>,
    /// The simulated gateway.
    pub simulator: SimulatorConfig,
    /// The gateway client.
    pub resilience: ResilienceConfig,
}

fn millis(max: u64) -> impl FnOnce(&str) -> Result<Duration, String> {
    move |v| match v.parse::<u64>() {
        Ok(ms) if ms <= max => Ok(Duration::from_millis(ms)),
        _ => Err(format!("expected whole milliseconds from 0 to {max}")),
    }
}

fn count(min: u32, max: u32) -> impl FnOnce(&str) -> Result<u32, String> {
    move |v| match v.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

/// An `http://host[:port][/prefix]` URL: no TLS client is built in, and
/// credentials in it would be logged with it.
fn gateway_url(value: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = value
        .parse()
        .map_err(|_| String::from("expected a URL such as http://127.0.0.1:8099"))?;
    if uri.scheme_str() != Some("http") {
        return Err(String::from(
            "expected an http:// URL (https is not supported)",
        ));
    }
    match uri.authority() {
        None => Err(String::from("expected a host in the URL")),
        Some(a) if a.as_str().contains('@') => Err(String::from(
            "credentials in the URL are refused (it is logged)",
        )),
        Some(_) if uri.query().is_some() => Err(String::from("expected no query in the URL")),
        Some(_) => Ok(uri),
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "payment-service";
    const ABOUT: &'static str = "orderflow payment service: charges orders from NATS JetStream events through a resilient gateway client.";

    fn vars() -> Vec<Var> {
        let mut vars = common_vars(GRPC_ADDR);
        vars.extend([
            GATEWAY_URL,
            SIM_DECLINE_ABOVE_UNITS,
            SIM_LATENCY_MS,
            SIM_FAILURE_RATE,
            GATEWAY_TIMEOUT_MS,
            GATEWAY_MAX_ATTEMPTS,
            GATEWAY_BREAKER_FAILURES,
            GATEWAY_BREAKER_OPEN_MS,
        ]);
        vars
    }

    fn from_lookup(lookup: &dyn Lookup) -> Result<Self, ConfigError> {
        let mut r = EnvReader::new(lookup);
        let common = CommonConfig::read(&mut r, &GRPC_ADDR, Self::NAME, env!("CARGO_PKG_VERSION"));
        let gateway_url = match r.raw(&GATEWAY_URL) {
            None => Some(None),
            Some(_) => r.parse_with(&GATEWAY_URL, gateway_url).map(Some),
        };
        let decline = r.parse_with(&SIM_DECLINE_ABOVE_UNITS, |v| {
            v.parse::<u64>()
                .map_err(|_| String::from("expected a whole number of currency units"))
        });
        let latency = r.parse_with(&SIM_LATENCY_MS, millis(60_000));
        let failure_rate = r.parse_with(&SIM_FAILURE_RATE, |v| match v.parse::<f64>() {
            Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
            _ => Err(String::from("expected a number from 0 to 1")),
        });
        let timeout = r.parse_with(&GATEWAY_TIMEOUT_MS, millis(60_000));
        let attempts = r.parse_with(&GATEWAY_MAX_ATTEMPTS, count(1, 10));
        let failures = r.parse_with(&GATEWAY_BREAKER_FAILURES, count(1, 1000));
        let open = r.parse_with(&GATEWAY_BREAKER_OPEN_MS, millis(600_000));
        if timeout.is_some_and(|t| t.is_zero()) {
            r.problem(&GATEWAY_TIMEOUT_MS, "must be greater than 0");
        }
        let config = (|| {
            Some(Self {
                common: common?,
                gateway_url: gateway_url?,
                simulator: SimulatorConfig {
                    decline_above_units: decline?,
                    latency: latency?,
                    failure_rate: failure_rate?,
                },
                resilience: ResilienceConfig {
                    timeout: timeout?,
                    max_attempts: attempts?,
                    breaker_failures: failures?,
                    breaker_open: open?,
                },
            })
        })();
        r.finish(config)
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_match_the_contract() -> Result<(), ConfigError> {
        let config = Config::from_lookup(&HashMap::<&str, &str>::new())?;
        assert_eq!(config.common.grpc_addr.port(), 50052);
        assert_eq!(config.simulator.decline_above_units, 10_000);
        assert_eq!(config.simulator.latency, Duration::ZERO);
        assert_eq!(config.simulator.failure_rate, 0.0);
        assert_eq!(
            config.gateway_url, None,
            "the built-in simulator by default"
        );
        Ok(())
    }

    #[test]
    fn gateway_urls_are_plain_http() {
        let read = |url: &str| Config::from_lookup(&HashMap::from([("GATEWAY_URL", url)]));
        let config = read("http://127.0.0.1:8099").map_err(|e| e.to_string());
        assert_eq!(
            config.map(|c| c.gateway_url.map(|u| u.to_string())),
            Ok(Some(String::from("http://127.0.0.1:8099/")))
        );
        for bad in [
            "https://gw:443",
            "127.0.0.1:8099",
            "http://u:p@gw",
            "not a url",
            "http://gw/?a=1",
        ] {
            let Err(error) = read(bad) else {
                panic!("accepted GATEWAY_URL={bad}")
            };
            assert!(error.problems[0].starts_with("GATEWAY_URL:"), "{error}");
        }
    }

    #[test]
    fn bad_simulator_settings_are_all_reported() {
        let env: HashMap<&str, &str> = [
            ("SIM_FAILURE_RATE", "1.5"),
            ("SIM_LATENCY_MS", "-1"),
            ("SIM_DECLINE_ABOVE_UNITS", "lots"),
        ]
        .into();
        let Err(error) = Config::from_lookup(&env) else {
            panic!("accepted bad settings")
        };
        assert_eq!(error.problems.len(), 3, "{error}");
    }
}
