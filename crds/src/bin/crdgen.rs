//! `crdgen`: writes the Causeway CRDs into the Helm chart, or with `--check` verifies that the
//! committed files match the Rust types (for CI).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use causeway_crds::crdgen::{self, REGENERATE_COMMAND};
use clap::Parser;

/// `CAUSEWAY_VERSION` at compile time when set, else the crate's version. Read only in the
/// binary, so a new value recompiles just the binary (docs/images.md).
const VERSION: &str = match option_env!("CAUSEWAY_VERSION") {
    Some(v) if !v.is_empty() => v,
    _ => env!("CARGO_PKG_VERSION"),
};

/// Generate the CustomResourceDefinitions of causeway.dev/v1alpha1.
#[derive(Parser, Debug)]
#[command(name = "crdgen", version = VERSION)]
struct Args {
    /// Do not write; exit non-zero and list the files that differ from the types.
    #[arg(long)]
    check: bool,
    /// Directory to write the YAML files into.
    #[arg(long, default_value_os_t = crdgen::default_output_dir())]
    out_dir: PathBuf,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let generated = crdgen::generated_crds().context("render CRDs as YAML")?;
    if args.check {
        let drifted = crdgen::drifted_files(&args.out_dir, &generated);
        if drifted.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("generated CRDs differ from the Rust types; run `{REGENERATE_COMMAND}`:");
        for path in drifted {
            eprintln!("  {}", path.display());
        }
        return Ok(ExitCode::FAILURE);
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("create {}", args.out_dir.display()))?;
    for crd in generated {
        let path = args.out_dir.join(&crd.file_name);
        std::fs::write(&path, &crd.yaml).with_context(|| format!("write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
