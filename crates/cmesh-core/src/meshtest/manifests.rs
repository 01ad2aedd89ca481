//! The objects a run creates in each cluster, in creation order: a namespace labelled with the
//! run, an nginx configuration that answers with the cluster's name, the server Deployment, the
//! global Services (plain, affinity local, affinity remote), the client pod; and, for the
//! ingress part, an Ingress to the global Service.

use serde_json::{Value, json};

use super::{
    CLIENT, CLIENT_APP, LABEL_MANAGED_BY, LABEL_RUN, MANAGED_BY, PORT, SERVER, SERVER_APP,
    SERVER_LOCAL, SERVER_REMOTE, Settings,
};
use crate::lint::annotations as a;

fn labels(s: &Settings, app: Option<&str>) -> Value {
    let mut l = json!({LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: s.run_id});
    if let Some(app) = app {
        l["app.kubernetes.io/name"] = json!(app);
    }
    l
}

/// What the server answers: one line naming its cluster and pod.
pub fn nginx_config(cluster: &str) -> String {
    format!(
        "server {{\n    listen {PORT};\n    location / {{\n        default_type text/plain;\n        return 200 \"cluster={cluster} pod=$hostname\\n\";\n    }}\n}}\n"
    )
}

/// The objects of `cluster`, namespace first.
pub fn setup(s: &Settings, cluster: &str) -> Vec<Value> {
    let ns = &s.namespace;
    let mut namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": labels(s, None)},
    });
    if s.version.at_least(20) {
        // Cilium 1.20 shares only Services of global namespaces; say so explicitly, whatever
        // clustermesh.defaultGlobalNamespace is.
        namespace["metadata"]["annotations"] = json!({a::GLOBAL_NAMESPACE: "true"});
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{SERVER}-nginx"), "namespace": ns, "labels": labels(s, None)},
        "data": {"default.conf": nginx_config(cluster)},
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": SERVER, "namespace": ns, "labels": labels(s, Some(SERVER_APP))},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": SERVER_APP}},
            "template": {
                "metadata": {"labels": labels(s, Some(SERVER_APP))},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "nginx",
                        "image": s.server_image,
                        "ports": [{"name": "http", "containerPort": PORT}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": PORT}, "periodSeconds": 2},
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/nginx/conf.d"}],
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": format!("{SERVER}-nginx")}}],
                },
            },
        },
    });
    let service = |name: &str, affinity: Option<&str>| {
        let mut ann = json!({a::GLOBAL: "true"});
        if let Some(x) = affinity {
            ann[a::AFFINITY] = json!(x);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels(s, None), "annotations": ann},
            "spec": {
                "selector": {"app.kubernetes.io/name": SERVER_APP},
                "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
            },
        })
    };
    let client = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": CLIENT, "namespace": ns, "labels": labels(s, Some(CLIENT_APP))},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "curl",
                "image": s.client_image,
                // PID 1 ignores SIGTERM unless it traps it: without this, deleting the pod
                // waits for the whole grace period.
                "command": ["sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"],
            }],
        },
    });
    vec![
        namespace,
        config,
        deployment,
        service(SERVER, None),
        service(SERVER_LOCAL, Some("local")),
        service(SERVER_REMOTE, Some("remote")),
        client,
    ]
}

/// The test Ingress to the global Service, of ingress class `class`.
pub fn ingress(s: &Settings, class: &str, service_upstream: bool) -> Value {
    let mut v = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": SERVER, "namespace": s.namespace, "labels": labels(s, None)},
        "spec": {
            "ingressClassName": class,
            "rules": [{
                "host": s.ingress_host(),
                "http": {"paths": [{
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": SERVER, "port": {"number": PORT}}},
                }]},
            }],
        },
    });
    if service_upstream {
        v["metadata"]["annotations"] = json!({a::SERVICE_UPSTREAM: "true"});
    }
    v
}

/// The merge patch that sets or removes `service-upstream` on the test Ingress.
pub fn service_upstream_patch(on: bool) -> Value {
    json!({"metadata": {"annotations": {a::SERVICE_UPSTREAM: if on { json!("true") } else { Value::Null }}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_object_is_labelled_with_the_run_and_namespaced() {
        let s = Settings::new("abc123", "1.20.0".parse().unwrap());
        let objs = setup(&s, "k8s01");
        assert_eq!(objs[0]["kind"], "Namespace");
        assert_eq!(
            objs[0]["metadata"]["annotations"][a::GLOBAL_NAMESPACE],
            "true"
        );
        for o in &objs {
            assert_eq!(o["metadata"]["labels"][LABEL_RUN], "abc123", "{o}");
            assert_eq!(o["metadata"]["labels"][LABEL_MANAGED_BY], "cmesh");
            if o["kind"] != "Namespace" {
                assert_eq!(o["metadata"]["namespace"], "cmesh-test-abc123");
            }
        }
        let services: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "Service").collect();
        assert_eq!(services.len(), 3);
        assert!(
            services
                .iter()
                .all(|s| s["metadata"]["annotations"][a::GLOBAL] == "true")
        );
        assert_eq!(services[1]["metadata"]["annotations"][a::AFFINITY], "local");
        assert!(
            objs[1]["data"]["default.conf"]
                .as_str()
                .unwrap()
                .contains("return 200 \"cluster=k8s01 pod=$hostname\\n\";")
        );
        // Before 1.20 the namespace needs no annotation.
        let s = Settings::new("abc123", "1.16.19".parse().unwrap());
        assert!(
            setup(&s, "k8s01")[0]["metadata"]
                .get("annotations")
                .is_none()
        );
    }

    #[test]
    fn ingress_with_and_without_service_upstream() {
        let s = Settings::new("abc123", "1.16.19".parse().unwrap());
        let i = ingress(&s, "nginx", false);
        assert!(i["metadata"].get("annotations").is_none());
        assert_eq!(
            i["spec"]["rules"][0]["host"],
            "cmesh-test-abc123.cmesh.invalid"
        );
        let i = ingress(&s, "nginx", true);
        assert_eq!(i["metadata"]["annotations"][a::SERVICE_UPSTREAM], "true");
    }
}
