//! The gRPC paths of the infrastructure every service serves beside its
//! API: health and reflection.
//!
//! They are never authenticated (`auth`) and never shed (`overload`), so
//! probes and discovery always answer: a liveness probe refused under load
//! would restart a busy pod, and grpcurl finds the schema without a token
//! (reflection can still be turned off with `GRPC_REFLECTION=false`). One
//! rule for both layers, in a module that depends on nothing, so the two
//! cannot disagree about which calls are open.

/// Whether `path` (`/pkg.Service/Method`) is a call to health or
/// reflection.
pub(crate) fn is_health_or_reflection(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_reflection_are_open_and_nothing_else_is() {
        assert!(is_health_or_reflection("/grpc.health.v1.Health/Check"));
        assert!(is_health_or_reflection(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(is_health_or_reflection(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_health_or_reflection(
            "/orderflow.order.v1.OrderService/CreateOrder"
        ));
        assert!(!is_health_or_reflection(
            "/orderflow.admin.v1.DeadLetterService/ReplayDeadLetter"
        ));
        assert!(!is_health_or_reflection("/grpc.healthy/Check"));
    }
}
