//! Glue for the e2e test binaries: one cluster per binary, started lazily by the first test
//! that runs (so `--list` or a filter matching nothing starts nothing), shared by its tests
//! run one at a time, and torn down at the end, on a failed test, and on Ctrl-C.
//!
//! Built on libtest-mimic, so the output and flags are those of `cargo test`, and a cluster
//! that cannot start fails every test with the reason: nothing is ever skipped silently.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Result;
use libtest_mimic::{Arguments, Failed, Trial};

use crate::cluster::{Cluster, UpOptions};
use crate::state;
use crate::topology::Topology;

/// An e2e test over the shared cluster.
pub type TestFn = Box<dyn FnOnce(&Cluster) -> Result<()> + Send>;

/// A named test for [`run_suite`]; test names read as sentences.
pub fn test(
    name: impl Into<String>,
    f: impl FnOnce(&Cluster) -> Result<()> + Send + 'static,
) -> (String, TestFn) {
    (name.into(), Box::new(f))
}

/// Runs `tests` against one cluster named `name` built from `topology`.
pub fn run_suite(
    name: &'static str,
    topology: fn() -> Topology,
    tests: Vec<(String, TestFn)>,
) -> ExitCode {
    run_suite_with(name, topology, || Ok(Vec::new()), tests)
}

/// [`run_suite`] for a kubelet topology: `images` lists the image archives every node's
/// containerd imports before its kubelet starts (a missing archive fails every test).
pub fn run_suite_with(
    name: &'static str,
    topology: fn() -> Topology,
    images: fn() -> Result<Vec<PathBuf>>,
    tests: Vec<(String, TestFn)>,
) -> ExitCode {
    let mut args = Arguments::from_args();
    // One cluster, one test at a time: scenarios change shared state (links, processes).
    args.test_threads = Some(1);

    if let Err(e) = state::teardown_on_interrupt(name, "[e2e]") {
        eprintln!("[e2e] {e:#}");
    }

    type Shared = Arc<Mutex<Option<Arc<Cluster>>>>;
    let cell: Arc<OnceLock<Result<Shared, String>>> = Arc::new(OnceLock::new());
    let trials = tests
        .into_iter()
        .map(|(test_name, f)| {
            let cell = Arc::clone(&cell);
            Trial::test(test_name, move || {
                let shared = cell
                    .get_or_init(|| {
                        images()
                            .and_then(|images| {
                                let opts = UpOptions {
                                    images,
                                    ..UpOptions::default()
                                };
                                Cluster::up_with(name, topology(), opts)
                            })
                            .map(|c| Arc::new(Mutex::new(Some(Arc::new(c)))))
                            .map_err(|e| format!("{e:#}"))
                    })
                    .as_ref()
                    .map_err(|e| Failed::from(format!("the test cluster did not start: {e}")))?;
                let cluster = shared
                    .lock()
                    .map_err(|_| Failed::from("cluster lock poisoned"))?
                    .clone()
                    .ok_or_else(|| Failed::from("cluster already torn down"))?;
                f(&cluster).map_err(|e| Failed::from(format!("{e:#}")))
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Drop the last reference: tear-down runs in `Cluster::drop`.
    if let Some(Ok(shared)) = cell.get()
        && let Ok(mut slot) = shared.lock()
    {
        slot.take();
    }
    conclusion.exit_code()
}
