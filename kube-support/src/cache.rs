//! Reflector caches as both binaries keep them: every object of a kind (optionally narrowed by
//! a watcher config), without `managedFields`, which neither reads and which are a good part
//! of each object at thousands of Nodes and NodeSubnets.

use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

/// A cache of the `K`s `config` selects, and the stream of objects that changed, which must be
/// polled to keep the cache filled.
pub fn cached<K>(
    client: &Client,
    config: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    cached_from(Api::<K>::all(client.clone()), config)
}

/// [`cached`] from `api` (a namespaced one, for kinds read in one namespace).
pub fn cached_from<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store::<K>();
    let events = reflector::reflector(
        writer,
        watcher(api, config.any_semantic()).modify(|object| object.managed_fields_mut().clear()),
    )
    .default_backoff()
    .touched_objects();
    (store, events)
}
