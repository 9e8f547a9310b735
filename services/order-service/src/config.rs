//! The order service's configuration: only the common variables.

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

/// Settings of the order service.
#[derive(Clone, Debug)]
pub struct Config {
    /// Settings every service has.
    pub common: CommonConfig,
}

impl ServiceConfig for Config {
    const NAME: &'static str = "order-service";
    const ABOUT: &'static str = "orderflow order service: places orders over gRPC and commits them as events on NATS JetStream.";

    fn vars() -> Vec<Var> {
        common_vars(GRPC_ADDR)
    }

    fn from_lookup(lookup: &dyn Lookup) -> Result<Self, ConfigError> {
        let mut reader = EnvReader::new(lookup);
        let common = CommonConfig::read(
            &mut reader,
            &GRPC_ADDR,
            Self::NAME,
            env!("CARGO_PKG_VERSION"),
        );
        reader.finish(common.map(|common| Self { common }))
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
