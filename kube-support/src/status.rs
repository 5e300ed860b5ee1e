//! Writing an object's status with server-side apply: the one way the operator and the agents
//! write status, so each field has exactly one owner (the field manager) and a writer never
//! overwrites fields it does not own.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Applies `status` to the cluster-scoped object `name` of kind `K` as `field_manager`
/// (forcing conflicts: the status is the writer's alone).
///
/// # Errors
/// The API server's answer when the write fails.
pub async fn apply<K>(
    client: &Client,
    name: &str,
    status: &impl Serialize,
    field_manager: &str,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(drop)
}
