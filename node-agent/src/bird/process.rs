//! The BIRD process (I/O): its files in the runtime directory, checking a configuration with
//! `bird -p`, starting `bird -f` (through `ip netns exec` when a namespace is named), and
//! making sure no BIRD of an earlier agent is left running on the same directory.
//!
//! BIRD runs in the foreground as the agent's child, killed when the agent drops it
//! (`kill_on_drop`); its log (`log stderr all`) is forwarded to the agent's log. An agent that
//! is itself killed cannot take its child along (that needs `PR_SET_PDEATHSIG`, i.e.
//! `unsafe`); the next agent on the same directory kills the leftover BIRD by the pid in its
//! pid file before starting its own ([`kill_leftover`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tracing::{debug, info, warn};

use super::control::Control;
use super::error::BirdError;

/// How BIRD is run: the program, its runtime directory and the network namespace.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `bird` program (`--bird`; found on `PATH` when it has no slash).
    pub program: PathBuf,
    /// The runtime directory (`--bird-dir`): `bird.conf`, `bird.ctl`, `bird.pid`.
    pub dir: PathBuf,
    /// Run BIRD in this named network namespace (`ip netns exec`), for tests; `None`: the
    /// agent's own.
    pub netns: Option<String>,
}

/// The default runtime directory.
pub const DEFAULT_DIR: &str = "/run/causeway/bird";

impl Default for Options {
    fn default() -> Self {
        Self {
            program: PathBuf::from("bird"),
            dir: PathBuf::from(DEFAULT_DIR),
            netns: None,
        }
    }
}

/// The files BIRD uses in its directory.
#[derive(Clone, Debug)]
pub struct Paths {
    pub conf: PathBuf,
    /// A configuration being checked before it replaces `conf`.
    pub candidate: PathBuf,
    pub ctl: PathBuf,
    pub pid: PathBuf,
    /// Present while BIRD may have announced routes that routers keep across a restart: the
    /// next BIRD starts in graceful-restart recovery (`-R`). Removed after an administrative
    /// shutdown, which withdrew everything.
    pub announced: PathBuf,
}

impl Paths {
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        Self {
            conf: dir.join("bird.conf"),
            candidate: dir.join("bird.conf.new"),
            ctl: dir.join("bird.ctl"),
            pid: dir.join("bird.pid"),
            announced: dir.join("announced"),
        }
    }
}

/// Creates the directory (mode 0700: the control socket can reconfigure BIRD).
///
/// # Errors
/// When it cannot be created.
pub fn prepare(dir: &Path) -> Result<(), BirdError> {
    use std::os::unix::fs::PermissionsExt;
    let failed = |error| BirdError::Directory {
        dir: dir.to_owned(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)
}

/// Writes `text` as the candidate configuration and has BIRD check it (`bird -p`); when BIRD
/// accepts it, it replaces the configuration in force.
///
/// # Errors
/// When the file cannot be written or BIRD refuses it (its message in [`BirdError::Invalid`]).
pub async fn install_config(options: &Options, paths: &Paths, text: &str) -> Result<(), BirdError> {
    let written = |path: &Path| {
        let path = path.to_owned();
        move |error| BirdError::WriteConfig { path, error }
    };
    std::fs::write(&paths.candidate, text).map_err(written(&paths.candidate))?;
    let out = Command::new(&options.program)
        .arg("-p")
        .arg("-c")
        .arg(&paths.candidate)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|error| BirdError::Spawn {
            program: options.program.display().to_string(),
            error,
        })?;
    if !out.status.success() {
        let reason = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
        return Err(BirdError::Invalid {
            path: paths.candidate.clone(),
            reason,
        });
    }
    std::fs::rename(&paths.candidate, &paths.conf).map_err(written(&paths.conf))
}

/// Kills a BIRD left running on this directory by an agent that could not stop it (killed
/// itself), found by its pid file; SIGKILL, so routers that support graceful restart keep the
/// node's routes until the new BIRD sends them again.
pub async fn kill_leftover(paths: &Paths) {
    let Some(pid) = std::fs::read_to_string(&paths.pid)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return;
    };
    // Only a BIRD started on this directory: the pid may have been reused since.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if !cmdline.contains("bird") || !cmdline.contains(&paths.ctl.display().to_string()) {
        return;
    }
    warn!(pid, "killing the BIRD an earlier agent left running");
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
#[must_use]
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// Starts BIRD on the installed configuration and waits until its control socket answers.
/// `recovering` starts it in graceful-restart recovery (`-R`).
///
/// # Errors
/// When BIRD cannot be started, exits, or its socket does not answer within 10 s.
pub async fn start(
    options: &Options,
    paths: &Paths,
    recovering: bool,
) -> Result<(Child, Control), BirdError> {
    let _ = std::fs::remove_file(&paths.ctl);
    let mut command = match &options.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&options.program);
            c
        }
        None => Command::new(&options.program),
    };
    command
        .arg("-f")
        .arg("-c")
        .arg(&paths.conf)
        .arg("-s")
        .arg(&paths.ctl)
        .arg("-P")
        .arg(&paths.pid);
    if recovering {
        command.arg("-R");
    }
    let mut child = command
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| BirdError::Spawn {
            program: options.program.display().to_string(),
            error,
        })?;
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    if let Some(stderr) = child.stderr.take() {
        let pid = child.id();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                info!(target: "bird", pid, "{line}");
                let _ = lines_tx.send(line);
            }
        });
    }
    info!(pid = child.id(), recovering, conf = %paths.conf.display(), "BIRD started");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = Vec::new();
            while let Ok(line) = lines_rx.try_recv() {
                stderr.push(line);
            }
            return Err(BirdError::Exited {
                status: status.to_string(),
                stderr: stderr.join("; "),
            });
        }
        match Control::connect(&paths.ctl).await {
            Ok(control) => return Ok((child, control)),
            Err(error) if Instant::now() > deadline => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(error);
            }
            Err(error) => debug!(%error, "waiting for BIRD's control socket"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `grace` for `child` to exit by itself, then kills it; removes its socket and
/// pid file.
pub async fn reap(child: &mut Child, paths: &Paths, grace: Duration) {
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        warn!(pid = child.id(), "BIRD did not exit in time; killing it");
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let _ = std::fs::remove_file(&paths.ctl);
    let _ = std::fs::remove_file(&paths.pid);
}
