//! The order service's configuration: the common variables and the payment
//! deadline.

use std::time::Duration;

use orderflow_platform::{
    config::{ConfigError, EnvReader, Lookup, Var},
    service_config::{CommonConfig, ServiceConfig, common_vars},
};

/// `GRPC_ADDR` of the order service.
pub const GRPC_ADDR: Var = Var {
    name: "GRPC_ADDR",
    default: Some("0.0.0.0:50051"),
    help: "address the gRPC server listens on",
};
/// `ORDER_PAYMENT_DEADLINE_SECS`.
pub const ORDER_PAYMENT_DEADLINE_SECS: Var = Var {
    name: "ORDER_PAYMENT_DEADLINE_SECS",
    default: Some("900"),
    help: "seconds after creation at which an order whose payment is still undecided fails (ORDER_STATUS_PAYMENT_FAILED); 0 sets no deadline on new orders",
};

/// The longest payment deadline: a week. Longer would keep a schedule per
/// undecided order in ORDERS for longer than any card authorization lasts.
const MAX_DEADLINE_SECS: u64 = 7 * 24 * 3600;

/// Settings of the order service.
#[derive(Clone, Debug)]
pub struct Config {
    /// Settings every service has.
    pub common: CommonConfig,
    /// How long after its creation an order may wait for its payment to be
    /// decided; `None`: new orders get no deadline.
    pub payment_deadline: Option<Duration>,
}

/// Parses a deadline in whole seconds, 0 meaning none.
fn deadline_secs(value: &str) -> Result<Option<Duration>, String> {
    match value.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(secs) if secs <= MAX_DEADLINE_SECS => Ok(Some(Duration::from_secs(secs))),
        _ => Err(format!(
            "expected whole seconds from 0 (no deadline) to {MAX_DEADLINE_SECS} (a week)"
        )),
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "order-service";
    const ABOUT: &'static str = "orderflow order service: places orders over gRPC and commits them as events on NATS JetStream.";

    fn vars() -> Vec<Var> {
        let mut vars = common_vars(GRPC_ADDR);
        vars.push(ORDER_PAYMENT_DEADLINE_SECS);
        vars
    }

    fn from_lookup(lookup: &dyn Lookup) -> Result<Self, ConfigError> {
        let mut reader = EnvReader::new(lookup);
        let common = CommonConfig::read(
            &mut reader,
            &GRPC_ADDR,
            Self::NAME,
            env!("CARGO_PKG_VERSION"),
        );
        let payment_deadline = reader.parse_with(&ORDER_PAYMENT_DEADLINE_SECS, deadline_secs);
        let config = (|| {
            Some(Self {
                common: common?,
                payment_deadline: payment_deadline?,
            })
        })();
        reader.finish(config)
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
    fn the_payment_deadline_defaults_to_15_minutes_and_0_turns_it_off() -> Result<(), ConfigError> {
        let read = |value: Option<&str>| {
            let env: HashMap<&str, &str> = value
                .map(|v| ("ORDER_PAYMENT_DEADLINE_SECS", v))
                .into_iter()
                .collect();
            Config::from_lookup(&env).map(|c| c.payment_deadline)
        };
        assert_eq!(read(None)?, Some(Duration::from_secs(900)));
        assert_eq!(read(Some("0"))?, None);
        assert_eq!(read(Some("30"))?, Some(Duration::from_secs(30)));
        for bad in ["-1", "1.5", "soon", "604801"] {
            let Err(error) = read(Some(bad)) else {
                panic!("accepted ORDER_PAYMENT_DEADLINE_SECS={bad}")
            };
            assert!(
                error.problems[0].starts_with("ORDER_PAYMENT_DEADLINE_SECS:"),
                "{error}"
            );
        }
        Ok(())
    }
}
