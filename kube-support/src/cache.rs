//! Reflector caches as both binaries keep them: every object of a kind (optionally narrowed by
//! a watcher config), without `managedFields`, which neither reads and which are a good part
//! of each object at thousands of Nodes and NodeSubnets. [`cached_slim`] also lets the caller
//! drop what it never reads of some objects before they are stored (the agent keeps only what
//! its plan reads of 20,000 peers' NodeSubnets).

use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

/// What a cache can hold: the bounds kube's reflector puts on a kind (all Kubernetes and
/// Causeway kinds meet them).
pub trait Cacheable:
    kube::Resource<DynamicType: Default + Eq + std::hash::Hash + Clone>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Cacheable for K where
    K: kube::Resource<DynamicType: Default + Eq + std::hash::Hash + Clone>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

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
    K: Cacheable,
{
    cached_from(Api::<K>::all(client.clone()), config)
}

/// [`cached`], with `slim` applied to every object before it is stored or passed on: what it
/// clears is gone from the cache, so it must clear only what no reader of the cache needs.
pub fn cached_slim<K>(
    client: &Client,
    config: watcher::Config,
    slim: impl FnMut(&mut K) + Send + 'static,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Cacheable,
{
    store_of(Api::<K>::all(client.clone()), config, slim)
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
    K: Cacheable,
{
    store_of(api, config, |_| ())
}

fn store_of<K>(
    api: Api<K>,
    config: watcher::Config,
    mut slim: impl FnMut(&mut K) + Send + 'static,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Cacheable,
{
    let (store, writer) = reflector::store::<K>();
    let events = reflector::reflector(
        writer,
        watcher(api, config.any_semantic()).modify(move |object| {
            object.managed_fields_mut().clear();
            slim(object);
        }),
    )
    .default_backoff()
    .touched_objects();
    (store, events)
}
