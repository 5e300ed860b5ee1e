//! Running external programs (iproute2, the control-plane binaries, CNI plugins, kubectl) with
//! errors that name the command line, its exit status and what it printed on stderr.
//!
//! Everything the harness does to the kernel or the cluster goes through here, so a failure
//! always reads as the exact command a person could paste to reproduce it. Once the harness
//! is shutting down (Ctrl-C, [`begin_shutdown`]) nothing new is started.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

/// The command line as a person would type it (program and arguments, no environment).
pub fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        line.push(' ');
        if arg.is_empty() || arg.contains([' ', '"', '\'', '{', '}']) {
            line.push_str(&format!("'{}'", arg.replace('\'', "'\\''")));
        } else {
            line.push_str(&arg);
        }
    }
    line
}

/// Runs `cmd` to completion and returns its stdout; fails with the command line, exit status
/// and stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<String> {
    run_with_input(cmd, None)
}

/// Like [`run`], feeding `input` on stdin.
pub fn run_stdin(cmd: &mut Command, input: &[u8]) -> Result<String> {
    run_with_input(cmd, Some(input))
}

fn run_with_input(cmd: &mut Command, input: Option<&[u8]>) -> Result<String> {
    let line = describe(cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| {
        format!("cannot start `{line}` (is the program installed? run `make deps`)")
    })?;
    if let Some(input) = input {
        // Take stdin so it is closed (EOF) once written.
        let mut stdin = child.stdin.take().context("child stdin")?;
        stdin
            .write_all(input)
            .with_context(|| format!("writing stdin of `{line}`"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{line}`"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = if stderr.trim().is_empty() {
            stdout.trim()
        } else {
            stderr.trim()
        };
        bail!("`{line}` failed ({}): {detail}", out.status);
    }
    Ok(stdout)
}

/// Runs `cmd` and reports only whether it exited zero (for probes such as "is it reachable").
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `ip netns exec NS PROGRAM`: `ip` enters the namespace and then execs the program, so the
/// process keeps the pid `spawn` returns (the harness kills by that pid).
pub fn in_netns(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

/// `ip -n NS -batch -`: several iproute2 commands in one process, failing on the first error.
pub fn ip_batch(ns: Option<&str>, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    ensure_not_shutting_down()?;
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-batch", "-"]);
    let script = lines.join("\n") + "\n";
    run_stdin(&mut cmd, script.as_bytes()).with_context(|| {
        format!(
            "ip batch in {}:\n{script}",
            ns.unwrap_or("the root namespace")
        )
    })?;
    Ok(())
}

/// Whether `program` is a file on `PATH` (or a path to a file).
pub fn find_program(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        || std::path::Path::new(program).is_file()
}

/// Fails with the fix when a program the harness needs is missing.
pub fn require_program(program: &str, package: &str) -> Result<()> {
    if !find_program(program) {
        bail!("`{program}` is not installed: run `make deps` (Debian package `{package}`)");
    }
    Ok(())
}

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Marks the process as tearing down (Ctrl-C): from now on the harness creates nothing, so a
/// test still running on another thread cannot add a namespace behind the tear-down's back.
pub fn begin_shutdown() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}

/// Fails once [`begin_shutdown`] was called; every creating operation checks this first.
pub fn ensure_not_shutting_down() -> Result<()> {
    if SHUTTING_DOWN.load(Ordering::SeqCst) {
        anyhow::bail!("the harness is shutting down (interrupted)");
    }
    Ok(())
}
