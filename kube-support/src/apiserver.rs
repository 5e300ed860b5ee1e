//! The API servers' own addresses, which nothing Causeway programs may capture (no client
//! overlay address, no route, no VIP may take one).
//!
//! A process knows one address from its client configuration: in a pod that is the
//! `kubernetes` Service's cluster IP, which is not on any node's network. The addresses the
//! nodes actually reach are the endpoints of that Service, which the API servers keep in the
//! EndpointSlices of `default/kubernetes`. [`cached`] watches just those slices; [`addresses`]
//! (pure) merges them with the configured address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

/// The namespace and Service whose endpoints are the API servers.
pub const NAMESPACE: &str = "default";
pub const SERVICE: &str = "kubernetes";

/// A cache of the `default/kubernetes` EndpointSlices, and the stream that fills it (drive
/// it; an error, e.g. no permission, only leaves the cache empty and is worth a warning).
pub fn cached(
    client: &Client,
) -> (
    Store<EndpointSlice>,
    impl futures::Stream<Item = Result<EndpointSlice, watcher::Error>> + Send + 'static,
) {
    crate::cache::cached_from(
        Api::namespaced(client.clone(), NAMESPACE),
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={SERVICE}")),
    )
}

/// The API servers' IPv4 addresses: `configured` (the client configuration's, when it is an
/// IP address) and every address in `slices`, sorted and without duplicates.
#[must_use]
pub fn addresses(configured: Option<IpAddr>, slices: &[Arc<EndpointSlice>]) -> Vec<Ipv4Addr> {
    let configured = match configured {
        Some(IpAddr::V4(a)) => Some(a),
        _ => None,
    };
    of_family(configured, slices, "IPv4")
}

/// The API servers' IPv6 addresses, as [`addresses`] finds the IPv4 ones (IPv6 underlays).
#[must_use]
pub fn addresses6(configured: Option<IpAddr>, slices: &[Arc<EndpointSlice>]) -> Vec<Ipv6Addr> {
    let configured = match configured {
        Some(IpAddr::V6(a)) => Some(a),
        _ => None,
    };
    of_family(configured, slices, "IPv6")
}

/// `configured` and the addresses of the slices of `address_type`, sorted, deduplicated.
fn of_family<A: FromStr + Ord>(
    configured: Option<A>,
    slices: &[Arc<EndpointSlice>],
    address_type: &str,
) -> Vec<A> {
    let mut all: Vec<A> = configured
        .into_iter()
        .chain(
            slices
                .iter()
                .filter(|s| s.address_type == address_type)
                .flat_map(|s| &s.endpoints)
                .flat_map(|e| &e.addresses)
                .filter_map(|a| a.parse().ok()),
        )
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The address a client configuration's URL names, when it is an IP address (of either
/// family; `https://[fd00:40::2]:6443` gives `fd00:40::2`).
#[must_use]
pub fn configured(config: &kube::Config) -> Option<IpAddr> {
    config
        .cluster_url
        .host()?
        .trim_matches(['[', ']'])
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::Endpoint;

    fn slice(kind: &str, addresses: &[&str]) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            address_type: kind.into(),
            endpoints: vec![Endpoint {
                addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
                ..Endpoint::default()
            }],
            ..EndpointSlice::default()
        })
    }

    #[test]
    fn the_service_address_and_the_endpoints_are_merged_ipv4_only() {
        let got = addresses(
            Some(Ipv4Addr::new(10, 96, 0, 1).into()),
            &[
                slice("IPv4", &["192.168.50.2", "192.168.50.3"]),
                slice("IPv6", &["fd00::2"]),
                slice("IPv4", &["192.168.50.2"]),
            ],
        );
        assert_eq!(
            got,
            [
                Ipv4Addr::new(10, 96, 0, 1),
                Ipv4Addr::new(192, 168, 50, 2),
                Ipv4Addr::new(192, 168, 50, 3)
            ]
        );
        assert!(addresses(None, &[]).is_empty());
        let v6 = addresses6(
            Some("fd00:96::1".parse().expect("ip")),
            &[
                slice("IPv4", &["192.168.50.2"]),
                slice("IPv6", &["fd00::2", "fd00::2"]),
            ],
        );
        assert_eq!(
            v6,
            [
                "fd00::2".parse::<Ipv6Addr>().expect("ip"),
                "fd00:96::1".parse().expect("ip")
            ]
        );
        assert!(addresses6(Some(Ipv4Addr::new(10, 96, 0, 1).into()), &[]).is_empty());
    }

    #[test]
    fn only_an_ip_host_counts() {
        let config = |url: &str| kube::Config::new(url.parse().expect("uri"));
        assert_eq!(
            configured(&config("https://192.168.50.2:6443")),
            Some(Ipv4Addr::new(192, 168, 50, 2).into())
        );
        assert_eq!(
            configured(&config("https://[fd00:40::2]:6443")),
            Some("fd00:40::2".parse().expect("ip"))
        );
        assert_eq!(configured(&config("https://api.example.com:6443")), None);
    }
}
