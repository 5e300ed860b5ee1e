//! One credential per ClientJoin client: the operator keeps a ServiceAccount for every client
//! listed in a gateway's `spec.clientJoin.clients`, in the clients' namespace (`--client-namespace`,
//! the chart's `<release namespace>-clients`), and deletes it when the client leaves the list
//! or the gateway goes (an owner reference lets the garbage collector do the latter). Deleting
//! the account revokes every token issued for it, so removing a client from the gateway cuts
//! it off.
//!
//! The account is named like the client's heartbeat Lease ([`heartbeat::client_lease_name`]),
//! which is what the chart's node-restriction policy compares: a client may write only the
//! Lease named after its own account. The chart grants the whole namespace's service-account
//! group the clients' read-only role and the heartbeat role, so the operator writes no RBAC.
//!
//! [`plan`] (pure) says what to create and delete; [`apply`] does it.

use std::collections::{BTreeMap, BTreeSet};

use causeway_crds::OverlayGateway;
use causeway_kube::heartbeat;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Resource, ResourceExt};

/// Label on every client account (the operator's watch selects on it).
pub const LABEL: (&str, &str) = ("app.kubernetes.io/component", "gateway-client");
/// Annotations naming the account's gateway and client (names may be longer than a label).
pub const GATEWAY_ANNOTATION: &str = "causeway.dev/gateway";
pub const CLIENT_ANNOTATION: &str = "causeway.dev/client";

/// The ServiceAccount of ClientJoin client `client` of `gateway`: the name of its heartbeat
/// Lease, so the node-restriction policy can compare the two.
#[must_use]
pub fn account_name(gateway: &str, client: &str) -> String {
    heartbeat::client_lease_name(gateway, client)
}

/// What [`apply`] should do for one gateway.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Accounts to create, by name, with the client they are for.
    pub create: BTreeMap<String, String>,
    /// Accounts to delete: this gateway's, for clients no longer listed.
    pub delete: BTreeSet<String>,
}

/// The accounts `gateway` (with uid `uid`) needs for its `clients`, against `existing` (the
/// accounts in the clients' namespace). An account counts as the gateway's when an owner
/// reference names its uid, so a gateway deleted and created again under the same name gets
/// fresh accounts (the old ones go with the old gateway, tokens and all).
#[must_use]
pub fn plan(gateway: &str, uid: &str, clients: &[&str], existing: &[&ServiceAccount]) -> Plan {
    let wanted: BTreeMap<String, String> = clients
        .iter()
        .map(|c| (account_name(gateway, c), (*c).to_owned()))
        .collect();
    let present: BTreeSet<String> = existing.iter().map(|a| a.name_any()).collect();
    let ours = existing.iter().filter(|a| {
        a.owner_references()
            .iter()
            .any(|o| o.uid == uid && o.kind == "OverlayGateway")
    });
    Plan {
        create: wanted
            .iter()
            .filter(|(name, _)| !present.contains(*name))
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect(),
        delete: ours
            .map(|a| a.name_any())
            .filter(|name| !wanted.contains_key(name))
            .collect(),
    }
}

/// The account for `client` of `gw`, owned by the gateway.
#[must_use]
pub fn account(gw: &OverlayGateway, name: &str, client: &str, namespace: &str) -> ServiceAccount {
    let owner = OwnerReference {
        api_version: OverlayGateway::api_version(&()).into_owned(),
        kind: OverlayGateway::kind(&()).into_owned(),
        name: gw.name_any(),
        uid: gw.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (LABEL.0.to_owned(), LABEL.1.to_owned()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "causeway-operator".to_owned(),
                ),
            ])),
            annotations: Some(BTreeMap::from([
                (GATEWAY_ANNOTATION.to_owned(), gw.name_any()),
                (CLIENT_ANNOTATION.to_owned(), client.to_owned()),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        // Tokens are made on demand (`kubectl create token`), never stored in Secrets.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// Carries out `plan` for `gw` in `namespace`. An account that exists already (created since
/// the cache was read) or is gone already (deleted since) is fine.
///
/// # Errors
/// The first failed write, with the account it was for.
pub async fn apply(
    api: &Api<ServiceAccount>,
    gw: &OverlayGateway,
    namespace: &str,
    plan: &Plan,
) -> Result<(), String> {
    for (name, client) in &plan.create {
        match api
            .create(
                &PostParams::default(),
                &account(gw, name, client, namespace),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                return Err(format!(
                    "creating ServiceAccount {namespace}/{name} for client {client}: {e}"
                ));
            }
        }
    }
    for name in &plan.delete {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(format!("deleting ServiceAccount {namespace}/{name}: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(name: &str, owner_uid: Option<&str>) -> ServiceAccount {
        ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                owner_references: owner_uid.map(|uid| {
                    vec![OwnerReference {
                        api_version: "causeway.dev/v1alpha1".into(),
                        kind: "OverlayGateway".into(),
                        name: "join".into(),
                        uid: uid.into(),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        }
    }

    #[test]
    fn accounts_are_created_for_new_clients_and_deleted_for_clients_that_left() {
        let laptop = existing("causeway-client-join.laptop", Some("u1"));
        let gone = existing("causeway-client-join.old", Some("u1"));
        // Another gateway's account, and one of an earlier gateway of the same name.
        let other = existing("causeway-client-other.pc", Some("u2"));
        let stale = existing("causeway-client-join.printer", Some("u0"));
        let plan = plan(
            "join",
            "u1",
            &["laptop", "desktop", "printer"],
            &[&laptop, &gone, &other, &stale],
        );
        assert_eq!(
            plan.create,
            BTreeMap::from([(
                "causeway-client-join.desktop".to_owned(),
                "desktop".to_owned()
            )])
        );
        assert_eq!(
            plan.delete,
            BTreeSet::from(["causeway-client-join.old".to_owned()])
        );
    }

    #[test]
    fn nothing_to_do_when_every_client_has_its_account() {
        let laptop = existing("causeway-client-join.laptop", Some("u1"));
        assert_eq!(plan("join", "u1", &["laptop"], &[&laptop]), Plan::default());
    }

    #[test]
    fn the_account_is_named_like_the_heartbeat_lease_and_owned_by_the_gateway() {
        let mut gw = OverlayGateway::new(
            "join",
            serde_json::from_value(serde_json::json!({
                "network": "n", "strategy": "ClientJoin",
                "clientJoin": {"clients": [{"name": "laptop", "address": "192.168.1.5",
                    "overlayAddress": "10.250.0.5"}]}}))
            .expect("spec"),
        );
        gw.metadata.uid = Some("u1".into());
        let name = account_name("join", "laptop");
        assert_eq!(name, heartbeat::client_lease_name("join", "laptop"));
        let sa = account(&gw, &name, "laptop", "causeway-system-clients");
        assert_eq!(
            sa.metadata.namespace.as_deref(),
            Some("causeway-system-clients")
        );
        let owner = &sa.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("OverlayGateway", "u1")
        );
        assert_eq!(sa.annotations()[CLIENT_ANNOTATION], "laptop");
        assert_eq!(sa.automount_service_account_token, Some(false));
        // A long gateway name still gives a valid, bounded account name.
        let long = account_name(&"g".repeat(250), "laptop");
        assert!(long.len() <= 253, "{long}");
    }
}
