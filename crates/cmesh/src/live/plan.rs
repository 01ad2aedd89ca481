//! `cmesh plan` and the plan `apply` shows first, the observations: per cluster the API
//! server, the release (`helm list`), its values (`helm get values`) and the Secrets the plan
//! compares, every cluster at once, each read within its deadline. Nothing is changed here;
//! `cmesh_core::plan` decides what the observations mean.

use std::time::Duration;

use cmesh_core::apply::RELEASE;
use cmesh_core::plan::Observed;
use cmesh_core::spec::CILIUM_NAMESPACE;
use cmesh_core::value::Value;

use crate::live::helm::{Helm, Target};
use crate::live::kube::{Conn, KubeError};

/// What was observed on one cluster, with the release's values as helm gave them (`apply`
/// starts from them instead of reading them again).
pub(crate) type Observation = Result<(Observed, Option<serde_json::Value>), String>;

/// Observes one cluster: `secrets` are the Secret names whose data the plan compares.
pub(crate) async fn observe(
    conn: &Result<Conn, KubeError>,
    secrets: &[String],
    helm: &Helm,
    request_timeout: Duration,
) -> Observation {
    let conn = conn.as_ref().map_err(ToString::to_string)?;
    conn.version()
        .await
        .map_err(|e| format!("API server unreachable: {e}"))?;
    let target = Target::of(conn);
    let (values, release) = futures_util::future::join(
        helm.get_values(RELEASE, CILIUM_NAMESPACE, &target, request_timeout * 2),
        helm.release(RELEASE, CILIUM_NAMESPACE, &target, request_timeout * 2),
    )
    .await;
    let raw = values.map_err(|e| format!("helm get values: {e}"))?;
    // A release that cannot be listed only costs the plan its "skip" (an upgrade is planned).
    let release = release.ok().flatten();
    let mut found = std::collections::BTreeMap::new();
    for name in secrets {
        match tokio::time::timeout(request_timeout, conn.secret_data(name)).await {
            Ok(Ok(Some(d))) => {
                found.insert(name.clone(), d);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(format!("Secret {name}: {e}")),
            Err(_) => {
                return Err(format!(
                    "Secret {name}: no answer within {}s",
                    request_timeout.as_secs()
                ));
            }
        }
    }
    Ok((
        Observed {
            release,
            values: raw.as_ref().map(Value::from_json),
            secrets: found,
        },
        raw,
    ))
}
