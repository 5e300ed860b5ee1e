//! Reflector caches as both binaries keep them: every object of a kind (optionally narrowed by
//! a watcher config), without `managedFields`, which neither reads and which are a good part
//! of each object at thousands of Nodes and NodeSubnets. [`cached_slim`] also lets the caller
//! drop what it never reads of some objects before they are stored (the agent keeps only what
//! its plan reads of 20,000 peers' NodeSubnets). Every cache streams its lists where the API
//! server can ([`watch`]), and lists in pages where it cannot.

use futures::{Stream, StreamExt};
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
        watch(api, config).modify(move |object| {
            object.managed_fields_mut().clear();
            slim(object);
        }),
    )
    .default_backoff()
    .touched_objects();
    (store, events)
}

/// The watch that fills a cache. Its lists are streamed where the API server offers it
/// (WatchList, on by default from Kubernetes 1.34 with etcd 3.5.13 or later): the objects come
/// from the server's watch cache as watch events, decoded as they arrive, where a paginated list
/// has the client wait for each page in turn. A server that cannot stream refuses
/// ([`refuses_streaming`]) before the list is complete; the cache then lists in pages, also from
/// the watch cache (`resourceVersion=0`), for as long as it runs.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: Cacheable,
{
    let state = Watch {
        events: watcher(api.clone(), config.clone().streaming_lists()).boxed(),
        paged: Some((api, config.any_semantic())),
        listing: true,
    };
    futures::stream::unfold(state, |mut w| async move {
        loop {
            let event = w.events.next().await?;
            match &event {
                Ok(watcher::Event::Init) => w.listing = true,
                Ok(watcher::Event::InitDone) => w.listing = false,
                Err(e) if w.listing && refuses_streaming(e) => {
                    if let Some((api, config)) = w.paged.take() {
                        tracing::info!(
                            kind = %K::kind(&Default::default()),
                            answer = %e,
                            "the API server does not stream lists (WatchList); listing in pages instead"
                        );
                        w.events = watcher(api, config).boxed();
                        w.listing = true;
                        continue;
                    }
                }
                _ => {}
            }
            return Some((event, w));
        }
    })
}

/// [`watch`]'s state: the watcher it reads, the paged one it turns to if the server refuses
/// to stream, and whether a list is under way.
struct Watch<K: Cacheable> {
    events: futures::stream::BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    paged: Option<(Api<K>, watcher::Config)>,
    listing: bool,
}

/// Whether the API server refused a streamed list. It rejects the request with 422 Invalid
/// when its `WatchList` feature gate is off ("sendInitialEvents is forbidden for watch unless
/// the WatchList feature gate is enabled", the default on 1.33), and accepts it but ends it with
/// a 500 error event when its etcd cannot serve it ("the required storage feature
/// RequestWatchProgress is disabled", etcd before 3.4.31 and 3.5.13). Anything else is retried
/// as it is: 429 "storage is (re)initializing" (a kind whose CRD was just created, as when the
/// chart installs CRDs and agents together), Forbidden (a paged list would be forbidden too,
/// and the error must stay in sight), a server going away, a connection that fails.
fn refuses_streaming(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) => {
            matches!(status.code, 400 | 422)
        }
        watcher::Error::WatchError(status) => status.code == 500,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> kube::core::Status {
        serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "message": message, "reason": "Invalid",
        }))
        .expect("a Status")
    }

    fn answer(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(status(code, message)))
    }

    #[test]
    fn a_refused_streamed_list_makes_the_cache_list_in_pages_and_a_transient_answer_does_not() {
        let gate_off = "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: \
                        sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled";
        assert!(refuses_streaming(&watcher::Error::WatchStartFailed(
            answer(422, gate_off)
        )));
        let old_etcd = "a watch stream was requested by the client but the required storage \
                        feature RequestWatchProgress is disabled";
        assert!(refuses_streaming(&watcher::Error::WatchError(Box::new(
            status(500, old_etcd)
        ))));
        // Retried as they are: a kind whose CRD was just created, a paged list that would be
        // forbidden too, a server going away, a watch that expired, answers to a paged list.
        for (code, message) in [
            (429, "storage is (re)initializing"),
            (403, "forbidden"),
            (503, "the server is shutting down"),
        ] {
            assert!(
                !refuses_streaming(&watcher::Error::WatchStartFailed(answer(code, message))),
                "{code}"
            );
        }
        assert!(!refuses_streaming(&watcher::Error::WatchError(Box::new(
            status(410, "too old resource version")
        ))));
        assert!(!refuses_streaming(&watcher::Error::InitialListFailed(
            answer(422, gate_off)
        )));
        assert!(!refuses_streaming(&watcher::Error::NoResourceVersion));
    }
}
