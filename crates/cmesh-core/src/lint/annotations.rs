//! The annotation names Cluster Mesh and ingress-nginx read, shared by `lint` and `test`.

/// Makes a Service global (Cilium merges its backends across clusters).
pub const GLOBAL: &str = "service.cilium.io/global";
/// The pre-1.12 name of [`GLOBAL`], still read by Cilium.
pub const GLOBAL_OLD: &str = "io.cilium/global-service";
/// `"false"` stops exporting this cluster's backends of a global Service.
pub const SHARED: &str = "service.cilium.io/shared";
/// The pre-1.12 name of [`SHARED`].
pub const SHARED_OLD: &str = "io.cilium/shared-service";
/// `local`, `remote` or `none`: which backends a global Service prefers.
pub const AFFINITY: &str = "service.cilium.io/affinity";
/// Per-Service EndpointSlice synchronisation (Cilium 1.16+, with the operator feature on).
pub const SYNC_ENDPOINT_SLICES: &str = "service.cilium.io/global-sync-endpoint-slices";
/// Namespace annotation: services in it may be global (Cilium 1.20+).
pub const GLOBAL_NAMESPACE: &str = "clustermesh.cilium.io/global";
/// ingress-nginx: send to the Service's ClusterIP instead of its endpoints.
pub const SERVICE_UPSTREAM: &str = "nginx.ingress.kubernetes.io/service-upstream";
/// The old way to choose an ingress class.
pub const INGRESS_CLASS: &str = "kubernetes.io/ingress.class";
/// Marks the default IngressClass.
pub const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";
/// The controller name of ingress-nginx in IngressClass objects.
pub const NGINX_CONTROLLER: &str = "k8s.io/ingress-nginx";

/// Go's `strconv.ParseBool`, which ingress-nginx uses for its boolean annotations.
pub fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// How Cilium reads its boolean Service annotations: case-insensitively `true` or `false`;
/// anything else means the default.
pub fn cilium_bool(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}
