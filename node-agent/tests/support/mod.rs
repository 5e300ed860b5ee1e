//! What the root-only integration tests share: the checks that fail loudly when root or a
//! tool is missing (a test never passes by skipping), running commands, and throwaway network
//! namespaces removed on drop, also when a test panics.

#![allow(dead_code)] // each test binary uses part of it

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Panics unless the effective user is root, saying why `suite` needs it.
pub fn require_root(suite: &str) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("Uid line in /proc/self/status");
    assert_eq!(
        euid, "0",
        "{suite} need root: they create network namespaces (run them as root)"
    );
}

/// Panics unless every `(tool, flag)` runs successfully, naming the package to install.
pub fn require_tools(suite: &str, tools: &[(&str, &str)], packages: &str) {
    for (tool, flag) in tools {
        let found = Command::new(tool).arg(flag).output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "{suite} need `{tool}` on PATH (apt-get install {packages})"
        );
    }
}

/// Runs `program`; panics only when it cannot start.
pub fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"))
}

/// Runs `program`, which must succeed; its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway network namespace `<prefix>-<pid>-<n>` with `lo` up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(prefix: &str) -> Self {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
