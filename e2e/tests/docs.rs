//! The documentation's diagrams are current: every `docs/diagrams/*.dot` has its `.svg` beside
//! it, every `.svg` there its `.dot`, and each `.svg` is exactly what Graphviz renders from its
//! source now (`dot -Tsvg`), byte for byte. A changed picture is re-rendered with
//! `make diagrams` and committed with its source.
//!
//! Needs Graphviz's `dot` (`make deps` installs the Debian package `graphviz`); fails, never
//! skips, without it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use causeway_e2e::cmd;
use causeway_e2e::controlplane::workspace_root;

/// `docs/diagrams` of the workspace.
fn diagrams_dir() -> PathBuf {
    workspace_root().join("docs").join("diagrams")
}

/// The stems of the files in `dir` whose extension is `ext` (`flat` for `flat.dot`).
fn stems(dir: &Path, ext: &str) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(ext)
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            out.insert(stem.to_string());
        }
    }
    Ok(out)
}

/// Fails with the fix when `dot` cannot run: the test never passes without checking.
fn require_dot() -> Result<String> {
    cmd::require_program("dot", "graphviz")?;
    // `dot -V` prints its version on stderr, which `cmd::run` does not return.
    let out = Command::new("dot")
        .arg("-V")
        .output()
        .context("cannot run `dot -V`: run `make deps` (Debian package `graphviz`)")?;
    if !out.status.success() {
        bail!(
            "`dot -V` failed ({}): run `make deps` (Debian package `graphviz`)",
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stderr).trim().to_string())
}

#[test]
fn every_diagram_source_has_its_rendering_and_every_rendering_its_source() -> Result<()> {
    let dir = diagrams_dir();
    let dots = stems(&dir, "dot")?;
    let svgs = stems(&dir, "svg")?;
    if dots.is_empty() {
        bail!("no .dot file in {}", dir.display());
    }
    let mut problems = Vec::new();
    for stem in dots.difference(&svgs) {
        problems.push(format!(
            "docs/diagrams/{stem}.dot has no docs/diagrams/{stem}.svg: run `make diagrams` and commit the .svg"
        ));
    }
    for stem in svgs.difference(&dots) {
        problems.push(format!(
            "docs/diagrams/{stem}.svg has no docs/diagrams/{stem}.dot: commit its Graphviz source, or delete the .svg"
        ));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

#[test]
fn every_committed_svg_is_what_graphviz_renders_from_its_source() -> Result<()> {
    let version = require_dot()?;
    let dir = diagrams_dir();
    let dots = stems(&dir, "dot")?;
    if dots.is_empty() {
        bail!("no .dot file in {}", dir.display());
    }
    let mut stale = Vec::new();
    for stem in &dots {
        let dot = dir.join(format!("{stem}.dot"));
        let svg = dir.join(format!("{stem}.svg"));
        let rendered = cmd::run(Command::new("dot").arg("-Tsvg").arg(&dot))?;
        // A missing .svg is the other test's finding; here it is simply not current.
        let committed = std::fs::read(&svg).unwrap_or_default();
        if rendered.as_bytes() != committed.as_slice() {
            stale.push(format!(
                "docs/diagrams/{stem}.svg is not what `dot -Tsvg docs/diagrams/{stem}.dot` renders"
            ));
        }
    }
    if !stale.is_empty() {
        bail!(
            "{}\nRun `make diagrams` and commit the .svg files (this machine's dot: {version}; \
             another Graphviz version or other fonts render other bytes, so render with the \
             Graphviz `make deps` installs).",
            stale.join("\n")
        );
    }
    Ok(())
}
