//! Container images built from this repository with nothing but the package registries: no
//! base image, no registry, no container engine. Each image is a deterministic single-layer
//! OCI image-layout archive (`oci-layout`, `index.json` and `blobs/sha256/…` in one tar: the
//! "oci-archive" format) that `ctr images import`, `kind load image-archive`, `podman load`
//! and `skopeo` accept. docs/images.md says what each image holds and why.
//!
//! Data flow: [`IMAGES`] says what goes into each image, a few lines per image → [`gather`]
//! (I/O) prepares the files: strips our binaries, compiles the pause program, extracts busybox
//! from its Debian package, adds every shared library `ldd` lists → a [`Rootfs`] →
//! [`archive`] (pure) packs the layer, config, manifest and index → [`build_all`] writes
//! `OUT/<name>.tar`.
//!
//! Determinism: the same files and [`Spec`] give a byte-identical archive. Tar entries are
//! sorted, owned by 0:0, with explicit modes and one fixed mtime ([`source_date_epoch`]: the
//! `SOURCE_DATE_EPOCH` convention, else the HEAD commit's time); gzip gets a fixed header (no
//! file name, no mtime) and level; JSON is written from structs and ordered maps. The gzip
//! bytes also depend on the `flate2`/`miniz_oxide` versions, which Cargo.lock pins.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use flate2::{Compression, GzBuilder};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::cmd;
use crate::controlplane::workspace_root;

/// `PATH` in every image's config.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Names the image when containerd, podman or Docker load the archive: the full reference.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI image layout's name for a manifest: the tag only, as containerd, BuildKit and
/// `docker save` write it (`skopeo copy oci-archive:X.tar:0.1.0 …` selects by it).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

// ---------------------------------------------------------------------------------------------
// Image definitions

/// One image: its name, reference and what goes into it.
#[derive(Clone, Copy, Debug)]
pub struct ImageDef {
    /// Short name: the archive's file name and the `title` label.
    pub name: &'static str,
    /// The reference without tag (`ghcr.io/causeway-dev/causeway`).
    pub repository: &'static str,
    pub tag: Tag,
    /// The `description` label.
    pub description: &'static str,
    pub entrypoint: &'static [&'static str],
    pub cmd: &'static [&'static str],
    /// The files, in any order (the layer is sorted).
    pub contents: &'static [Content],
}

/// How an image is tagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// The Causeway version (`--version` of the binaries): the chart's `appVersion`.
    Version,
    /// A fixed tag, for test images that node configuration names (containerd pins the pause
    /// image by reference).
    Fixed(&'static str),
}

/// One thing in an image. Every ELF added by [`Content::Binary`] or [`Content::Host`] brings the
/// shared libraries and the ELF interpreter `ldd` lists, at the paths `ldd` prints.
#[derive(Clone, Copy, Debug)]
pub enum Content {
    /// A binary of this workspace from the bin dir, stripped, at `/usr/local/bin/<name>`.
    Binary(&'static str),
    /// A program of the build machine, copied as it is to the same path.
    Host {
        path: &'static str,
        /// The Debian package that installs it, for the error when it is missing.
        package: &'static str,
    },
    /// A C program of `e2e/images/`, compiled with `gcc -static -Os` and stripped.
    StaticC {
        source: &'static str,
        path: &'static str,
    },
    /// `bin/busybox` of a Debian package (downloaded with `apt-get download` into
    /// [`deb_cache`], never installed), with a symlink in `/bin` for each applet.
    Busybox { package: &'static str },
    /// A small text file.
    File {
        path: &'static str,
        mode: u32,
        text: &'static str,
    },
    /// A directory with a mode other than 0755.
    Dir { path: &'static str, mode: u32 },
}

impl Content {
    /// [`Content::Host`].
    #[must_use]
    pub const fn host(path: &'static str, package: &'static str) -> Self {
        Self::Host { path, package }
    }

    /// [`Content::StaticC`].
    #[must_use]
    pub const fn static_c(source: &'static str, path: &'static str) -> Self {
        Self::StaticC { source, path }
    }

    /// [`Content::File`].
    #[must_use]
    pub const fn file(path: &'static str, mode: u32, text: &'static str) -> Self {
        Self::File { path, mode, text }
    }

    /// [`Content::Dir`].
    #[must_use]
    pub const fn dir(path: &'static str, mode: u32) -> Self {
        Self::Dir { path, mode }
    }
}

const PASSWD_NONROOT: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                              nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin\n";
const GROUP_NONROOT: &str = "root:x:0:\nnonroot:x:65532:\n";

/// The operator and the node agent: the image the chart runs. No base image: the binaries,
/// `nft` and exactly the libraries these need.
pub const CAUSEWAY: ImageDef = ImageDef {
    name: "causeway",
    repository: "ghcr.io/causeway-dev/causeway",
    tag: Tag::Version,
    description: "Causeway pod networking: the operator and the node agent",
    // No entrypoint: the chart sets `command:`. Run bare, the image prints the operator's help.
    entrypoint: &[],
    cmd: &["causeway-operator", "--help"],
    contents: &[
        Content::Binary("causeway-operator"),
        Content::Binary("causeway-node-agent"),
        // The agent runs `nft -j` for its NAT tables (node-agent/src/nat.rs) and BIRD as the
        // node's BGP speaker in Routed mode (node-agent/src/bird/); `birdc` is there to look
        // at BIRD (`kubectl exec ... -- birdc -s /run/causeway/bird/bird.ctl show protocols`).
        // No other program (`ip netns exec` only serves tests with named namespaces).
        Content::host("/usr/sbin/nft", "nftables"),
        Content::host("/usr/sbin/bird", "bird2"),
        Content::host("/usr/sbin/birdc", "bird2"),
        // The operator can run as `nonroot` (65532); the agent needs root and capabilities.
        Content::file("/etc/passwd", 0o644, PASSWD_NONROOT),
        Content::file("/etc/group", 0o644, GROUP_NONROOT),
        Content::dir("/tmp", 0o1777),
    ],
};

/// The sandbox image every test node's containerd pins (`pinned_images.sandbox`).
pub const PAUSE: ImageDef = ImageDef {
    name: "pause",
    repository: "localhost/causeway-e2e/pause",
    tag: Tag::Fixed("1"),
    description: "Causeway e2e: the pod sandbox (pause) container, a static C program",
    entrypoint: &["/pause"],
    cmd: &[],
    contents: &[Content::static_c("e2e/images/pause.c", "/pause")],
};

/// Test pods: `sh`, `ping`, `ip`, `hostname`, `wget`, `nc` (a TCP echo server is
/// `nc -ll -p 8080 -e cat`) from Debian's static busybox.
pub const TESTPOD: ImageDef = ImageDef {
    name: "testpod",
    repository: "localhost/causeway-e2e/testpod",
    tag: Tag::Fixed("1"),
    description: "Causeway e2e: test pods (sh, ping, ip, hostname, wget, nc)",
    entrypoint: &[],
    cmd: &["sh"],
    contents: &[
        Content::Busybox {
            package: "busybox-static",
        },
        Content::file("/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"),
        Content::file("/etc/group", 0o644, "root:x:0:\n"),
        Content::dir("/root", 0o700),
        Content::dir("/tmp", 0o1777),
    ],
};

/// Every image [`build_all`] builds.
pub const IMAGES: &[ImageDef] = &[CAUSEWAY, PAUSE, TESTPOD];

impl ImageDef {
    /// The tag for Causeway version `version`.
    #[must_use]
    pub fn tag(&self, version: &str) -> String {
        match self.tag {
            Tag::Version => version.to_owned(),
            Tag::Fixed(tag) => tag.to_owned(),
        }
    }

    /// `repository:tag`.
    #[must_use]
    pub fn reference(&self, version: &str) -> String {
        format!("{}:{}", self.repository, self.tag(version))
    }

    /// `causeway-0.1.0.tar` for versioned images, `pause.tar` for fixed ones.
    #[must_use]
    pub fn archive_name(&self, version: &str) -> String {
        match self.tag {
            Tag::Version => format!("{}-{version}.tar", self.name),
            Tag::Fixed(_) => format!("{}.tar", self.name),
        }
    }

    /// Programs the build runs for this image, with the Debian package of each.
    #[must_use]
    pub fn tools(&self) -> BTreeSet<(&'static str, &'static str)> {
        let mut tools = BTreeSet::new();
        for content in self.contents {
            match content {
                Content::Binary(_) => {
                    tools.insert(("strip", "binutils"));
                    tools.insert(("ldd", "libc-bin"));
                }
                Content::Host { .. } => {
                    tools.insert(("ldd", "libc-bin"));
                }
                Content::StaticC { .. } => {
                    tools.insert(("gcc", "gcc"));
                    tools.insert(("strip", "binutils"));
                }
                Content::Busybox { .. } => {
                    tools.insert(("apt-get", "apt"));
                    tools.insert(("dpkg-deb", "dpkg"));
                }
                Content::File { .. } | Content::Dir { .. } => {}
            }
        }
        tools
    }
}

// ---------------------------------------------------------------------------------------------
// Pure: file tree, layer, digests, JSON documents, archive

/// A layer's file tree, keyed by path without the leading `/`. Adding an entry adds its missing
/// parent directories with mode 0755.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rootfs {
    entries: BTreeMap<String, Entry>,
}

/// One entry of a [`Rootfs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

impl Rootfs {
    /// Adds or replaces a directory.
    pub fn dir(&mut self, path: &str, mode: u32) {
        self.insert(path, Entry::Dir { mode });
    }

    /// Adds or replaces a regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        self.insert(
            path,
            Entry::File {
                mode,
                data: data.into(),
            },
        );
    }

    /// Adds or replaces a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(
            path,
            Entry::Symlink {
                target: target.to_owned(),
            },
        );
    }

    /// Whether `path` has an entry.
    #[must_use]
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_matches('/'))
    }

    /// Entries in layer order (sorted by path, so every parent precedes its children).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, n)| (p.as_str(), n))
    }

    fn insert(&mut self, path: &str, node: Entry) {
        let path = path.trim_matches('/');
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.and_then(Path::to_str).filter(|d| !d.is_empty()) {
            self.entries
                .entry(dir.to_owned())
                .or_insert(Entry::Dir { mode: 0o755 });
            parent = Path::new(dir).parent();
        }
        self.entries.insert(path.to_owned(), node);
    }
}

/// A content address, `sha256:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// The sha256 digest of `data`.
    #[must_use]
    pub fn of(data: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(data))))
    }

    /// The hex part: the blob's file name in `blobs/sha256/`.
    #[must_use]
    pub fn hex(&self) -> &str {
        self.0.trim_start_matches("sha256:")
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Everything about an image except its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub repository: String,
    pub tag: String,
    /// OCI architecture (`amd64`); the OS is always `linux`.
    pub architecture: String,
    /// Seconds since the epoch: every entry's mtime and the config's `created`.
    pub created: i64,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

impl Spec {
    /// `repository:tag`.
    #[must_use]
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// A packed image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    /// The oci-archive tar.
    pub bytes: Vec<u8>,
    pub manifest: Digest,
    pub config: Digest,
    /// The compressed layer's digest (its blob name).
    pub layer: Digest,
    /// The uncompressed layer's digest (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
}

/// Where an image comes from: what the OCI labels say besides name and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// Seconds since the epoch ([`source_date_epoch`]).
    pub created: i64,
    /// The git commit of HEAD, when known.
    pub revision: Option<String>,
    /// The repository URL (the workspace's `package.repository`).
    pub source: String,
    /// SPDX expression (the workspace's `package.license`).
    pub licenses: String,
}

/// `created` as RFC 3339 UTC (`2026-12-05T10:00:00Z`).
///
/// # Errors
/// When `seconds` is outside the years -9999..=9999.
pub fn rfc3339(seconds: i64) -> Result<String> {
    let ts = jiff::Timestamp::from_second(seconds)
        .with_context(|| format!("{seconds} is not a timestamp"))?;
    Ok(ts.to_string())
}

/// The fixed mtime: `SOURCE_DATE_EPOCH` when set (reproducible-builds.org: a malformed value is
/// an error), else the HEAD commit's time (`git log -1 --format=%ct`), else 0.
///
/// # Errors
/// When `SOURCE_DATE_EPOCH` is not a non-negative integer.
pub fn source_date_epoch(env: Option<&str>, git_commit_time: Option<&str>) -> Result<i64> {
    if let Some(value) = env {
        return value
            .trim()
            .parse::<u32>()
            .map(i64::from)
            .with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds"));
    }
    Ok(git_commit_time
        .and_then(|t| t.trim().parse::<u32>().ok())
        .map_or(0, i64::from))
}

/// The OCI labels (`org.opencontainers.image.*`) of image `def` at Causeway version `version`.
///
/// # Errors
/// When `prov.created` is not a valid time.
pub fn labels(
    def: &ImageDef,
    version: &str,
    description: &str,
    prov: &Provenance,
) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut set = |key: &str, value: &str| {
        labels.insert(format!("org.opencontainers.image.{key}"), value.to_owned());
    };
    set("title", def.name);
    set("description", description);
    set("version", &def.tag(version));
    if let Some(revision) = &prov.revision {
        set("revision", revision);
    }
    set("source", &prov.source);
    set("licenses", &prov.licenses);
    set("created", &rfc3339(prov.created)?);
    Ok(labels)
}

/// The OCI name of a Rust target architecture (`std::env::consts::ARCH`).
#[must_use]
pub fn oci_architecture(rust_arch: &str) -> Option<&'static str> {
    Some(match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        _ => return None,
    })
}

/// Whether `tag` is a valid image tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[must_use]
pub fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A tar header for `path` with the fixed owner, time and `mode`.
fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: i64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h.set_mtime(u64::try_from(mtime).unwrap_or(0));
    h
}

/// The uncompressed layer: every entry in path order, directories with a trailing `/`.
///
/// # Errors
/// When a path cannot be stored in a tar header (empty, or with `..`).
pub fn layer_tar(rootfs: &Rootfs, mtime: i64) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, node) in rootfs.entries() {
        match node {
            Entry::Dir { mode } => {
                let mut h = header(tar::EntryType::Directory, *mode, 0, mtime);
                tar.append_data(&mut h, format!("{path}/"), std::io::empty())
            }
            Entry::File { mode, data } => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64, mtime);
                tar.append_data(&mut h, path, data.as_slice())
            }
            Entry::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
                tar.append_link(&mut h, path, target)
            }
        }
        .with_context(|| format!("adding {path} to the layer"))?;
    }
    tar.into_inner().context("finishing the layer tar")
}

/// gzip with a fixed header: no file name, mtime 0, OS "unknown", default level.
///
/// # Errors
/// Never in practice (writes into memory).
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::default());
    gz.write_all(data).context("compressing the layer")?;
    gz.finish().context("compressing the layer")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: &'a Digest,
    size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a str, String>,
}

#[derive(Serialize)]
struct Platform<'a> {
    architecture: &'a str,
    os: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<Descriptor<'a>>,
}

/// The OCI image configuration (image-spec `config.md`).
#[derive(Serialize)]
struct ImageConfig<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    config: RuntimeConfig<'a>,
    rootfs: RootfsConfig<'a>,
    history: Vec<History<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RuntimeConfig<'a> {
    env: Vec<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    entrypoint: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cmd: &'a [String],
    working_dir: &'a str,
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RootfsConfig<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<&'a Digest>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: &'a str,
}

/// Packs `rootfs` as image `spec`: the oci-archive tar with its blobs (layer, config,
/// manifest), `index.json` and `oci-layout`.
///
/// # Errors
/// When a path cannot be stored in a tar header or `spec.created` is not a valid time.
pub fn archive(spec: &Spec, rootfs: &Rootfs) -> Result<Archive> {
    let created = rfc3339(spec.created)?;
    let uncompressed = layer_tar(rootfs, spec.created)?;
    let diff_id = Digest::of(&uncompressed);
    let layer = gzip(&uncompressed)?;
    drop(uncompressed);
    let layer_digest = Digest::of(&layer);

    let config = serde_json::to_vec(&ImageConfig {
        created: &created,
        architecture: &spec.architecture,
        os: "linux",
        config: RuntimeConfig {
            env: vec![PATH_ENV],
            entrypoint: &spec.entrypoint,
            cmd: &spec.cmd,
            working_dir: "/",
            labels: &spec.labels,
        },
        rootfs: RootfsConfig {
            kind: "layers",
            diff_ids: vec![&diff_id],
        },
        history: vec![History {
            created: &created,
            created_by: "causeway-e2e image (e2e/src/image.rs)",
        }],
    })
    .context("encoding the image config")?;
    let config_digest = Digest::of(&config);

    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST,
        config: Descriptor {
            media_type: MEDIA_CONFIG,
            digest: &config_digest,
            size: config.len(),
            platform: None,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: MEDIA_LAYER,
            digest: &layer_digest,
            size: layer.len(),
            platform: None,
            annotations: BTreeMap::new(),
        }],
    })
    .context("encoding the image manifest")?;
    let manifest_digest = Digest::of(&manifest);

    let index = serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: MEDIA_INDEX,
        manifests: vec![Descriptor {
            media_type: MEDIA_MANIFEST,
            digest: &manifest_digest,
            size: manifest.len(),
            platform: Some(Platform {
                architecture: &spec.architecture,
                os: "linux",
            }),
            annotations: BTreeMap::from([
                (ANNOTATION_CONTAINERD_NAME, spec.reference()),
                (ANNOTATION_REF_NAME, spec.tag.clone()),
            ]),
        }],
    })
    .context("encoding index.json")?;

    // The outer tar has the same sorted, fixed-owner, fixed-time format as a layer.
    let mut layout = Rootfs::default();
    layout.file("oci-layout", 0o644, OCI_LAYOUT);
    layout.file("index.json", 0o644, index);
    for (digest, blob) in [
        (&layer_digest, layer),
        (&config_digest, config),
        (&manifest_digest, manifest),
    ] {
        layout.file(&format!("blobs/sha256/{}", digest.hex()), 0o644, blob);
    }
    Ok(Archive {
        bytes: layer_tar(&layout, spec.created).context("writing the oci-archive tar")?,
        manifest: manifest_digest,
        config: config_digest,
        layer: layer_digest,
        diff_id,
    })
}

/// The shared libraries and ELF interpreter in `ldd` output: absolute paths, no vDSO.
///
/// # Errors
/// When `ldd` reports a library `not found`.
pub fn parse_ldd(output: &str) -> Result<Vec<String>> {
    let mut libs = Vec::new();
    for line in output.lines().map(str::trim) {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`, or the interpreter
        // `/lib64/ld-linux-x86-64.so.2 (0x…)`, or the vDSO `linux-vdso.so.1 (0x…)`.
        let target = line.split_once("=>").map_or(line, |(_, t)| t.trim());
        if target.starts_with("not found") {
            bail!("ldd: {line}: install the package that provides it");
        }
        if let Some(path) = target
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            libs.push(path.to_owned());
        }
    }
    Ok(libs)
}

/// The applets a `busybox --list` printed, except `busybox` itself.
#[must_use]
pub fn applets(list: &str) -> Vec<&str> {
    list.lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// I/O: gathering files, provenance, writing archives

/// What [`build_all`] needs.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Directory holding `causeway-operator` and `causeway-node-agent` (`target/release`).
    pub bin_dir: PathBuf,
    /// Where the archives go (created when missing).
    pub out_dir: PathBuf,
    /// The Causeway version: the `causeway` image's tag ([`binaries_version`]).
    pub version: String,
}

/// One image written by [`build_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// The full reference, as `ctr images import` registers it.
    pub reference: String,
    pub archive: PathBuf,
    /// The image's identity in every registry and runtime (`ctr images ls`' DIGEST).
    pub manifest_digest: Digest,
    /// The archive's size in bytes.
    pub size: u64,
}

/// Builds every image of [`IMAGES`] into `opts.out_dir`: `causeway-<version>.tar`, `pause.tar`
/// and `testpod.tar`. Checks every tool and binary first, so a missing one fails at once with
/// the fix.
///
/// # Errors
/// When a tool, package or binary is missing, or a step fails.
pub fn build_all(opts: &BuildOptions) -> Result<Vec<Built>> {
    preflight(IMAGES, opts)?;
    let prov = provenance()?;
    IMAGES.iter().map(|def| build(def, opts, &prov)).collect()
}

/// Builds one image into `opts.out_dir` (see [`build_all`]); `prov` from [`provenance`].
///
/// # Errors
/// When a step fails; the message names the tool or file and the fix.
pub fn build(def: &ImageDef, opts: &BuildOptions, prov: &Provenance) -> Result<Built> {
    preflight(std::slice::from_ref(def), opts)?;
    let reference = def.reference(&opts.version);
    let architecture = oci_architecture(std::env::consts::ARCH).with_context(|| {
        format!(
            "no OCI architecture name for {}: add it to image::oci_architecture",
            std::env::consts::ARCH
        )
    })?;
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let work = WorkDir::new(&opts.out_dir, def.name)?;
    let gathered = gather(def, &opts.bin_dir, &work.0)
        .with_context(|| format!("gathering the files of {reference}"))?;
    let spec = Spec {
        repository: def.repository.to_owned(),
        tag: def.tag(&opts.version),
        architecture: architecture.to_owned(),
        created: prov.created,
        entrypoint: def.entrypoint.iter().map(|s| (*s).to_owned()).collect(),
        cmd: def.cmd.iter().map(|s| (*s).to_owned()).collect(),
        labels: labels(def, &opts.version, &gathered.description, prov)?,
    };
    let packed =
        archive(&spec, &gathered.rootfs).with_context(|| format!("packing {reference}"))?;
    let path = opts.out_dir.join(def.archive_name(&opts.version));
    let partial = path.with_extension("tar.partial");
    std::fs::write(&partial, &packed.bytes)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(Built {
        reference,
        archive: path,
        manifest_digest: packed.manifest,
        size: packed.bytes.len() as u64,
    })
}

/// The version both binaries in `bin_dir` print with `--version` (`causeway-operator 0.1.0`),
/// so an image's tag always matches what it runs.
///
/// # Errors
/// When a binary is missing, fails, or the two disagree.
pub fn binaries_version(bin_dir: &Path) -> Result<String> {
    let mut versions = BTreeSet::new();
    for name in ["causeway-operator", "causeway-node-agent"] {
        let bin = bin_dir.join(name);
        if !bin.is_file() {
            bail!("{} is missing: {}", bin.display(), build_hint(bin_dir));
        }
        let out = cmd::run(Command::new(&bin).arg("--version"))?;
        let version = out
            .trim()
            .strip_prefix(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .with_context(|| format!("`{} --version` printed {out:?}", bin.display()))?;
        versions.insert(version.to_owned());
    }
    match versions.len() {
        1 => Ok(versions.pop_first().unwrap_or_default()),
        _ => bail!(
            "the binaries in {} have different versions ({versions:?}): rebuild both",
            bin_dir.display()
        ),
    }
}

/// Where `make images` writes the archives the test cluster's nodes import.
pub fn test_images_dir() -> PathBuf {
    crate::controlplane::workspace_root().join("target/test-images")
}

/// Where `make images` keeps the second build (version `<version>-next`) the upgrade test
/// upgrades to.
pub fn next_bin_dir() -> PathBuf {
    crate::controlplane::workspace_root().join("target/next-bin")
}

/// The archives every kubelet node of the test cluster imports at start: the pause image,
/// the test pods' image and Causeway `version`. Fails with the fix when one is missing.
///
/// # Errors
/// When an archive has not been built.
pub fn node_archives(version: &str) -> Result<Vec<PathBuf>> {
    let dir = test_images_dir();
    let files: Vec<PathBuf> = [
        PAUSE.archive_name(version),
        TESTPOD.archive_name(version),
        CAUSEWAY.archive_name(version),
    ]
    .into_iter()
    .map(|f| dir.join(f))
    .collect();
    for f in &files {
        ensure!(
            f.is_file(),
            "{} is missing: run `make images` (`make up` and `make test` do)",
            f.display()
        );
    }
    Ok(files)
}

/// How to build the binaries a bin dir lacks.
fn build_hint(bin_dir: &Path) -> String {
    let release = if bin_dir.ends_with("release") {
        " --release"
    } else {
        ""
    };
    format!(
        "build it first (`cargo build{release} -p causeway-operator -p causeway-node-agent \
         --bins`; `make image` builds and packs the release binaries)"
    )
}

/// Whether `gcc -static` finds `libc.a` (Debian's `libc6-dev`): gcc prints the bare name when
/// it does not.
fn has_static_libc() -> bool {
    cmd::run(Command::new("gcc").arg("-print-file-name=libc.a"))
        .is_ok_and(|out| Path::new(out.trim()).is_absolute())
}

/// Fails with one message listing every missing tool and binary, and what installs each.
fn preflight(defs: &[ImageDef], opts: &BuildOptions) -> Result<()> {
    if !valid_tag(&opts.version) {
        bail!(
            "version {:?} cannot be an image tag (letters, digits, `_`, `.`, `-`; at most 128)",
            opts.version
        );
    }
    let mut missing = Vec::new();
    let mut tools: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for def in defs {
        for tool in def.tools() {
            tools.entry(tool).or_default().push(def.name);
        }
    }
    for ((tool, package), images) in &tools {
        if !cmd::find_program(tool) {
            missing.push(format!(
                "`{tool}` is not installed (needed for {}): `apt-get install {package}`",
                images.join(", ")
            ));
        } else if *tool == "gcc" && !has_static_libc() {
            missing.push(format!(
                "the static C library libc.a is missing (needed for {}): \
                 `apt-get install libc6-dev`",
                images.join(", ")
            ));
        }
    }
    for content in defs.iter().flat_map(|d| d.contents) {
        match content {
            Content::Binary(name) if !opts.bin_dir.join(name).is_file() => missing.push(format!(
                "{} is missing: {}",
                opts.bin_dir.join(name).display(),
                build_hint(&opts.bin_dir)
            )),
            Content::Host { path, package } if !Path::new(path).is_file() => missing.push(format!(
                "{path} is missing: `apt-get install {package}` (Debian package)"
            )),
            _ => {}
        }
    }
    if !missing.is_empty() {
        bail!("cannot build the images:\n  {}", missing.join("\n  "));
    }
    Ok(())
}

/// The labels' provenance of a build from this workspace.
///
/// # Errors
/// When `SOURCE_DATE_EPOCH` is malformed.
pub fn provenance() -> Result<Provenance> {
    let git = |args: &[&str]| {
        cmd::run(
            Command::new("git")
                .arg("-C")
                .arg(workspace_root())
                .args(args),
        )
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
    };
    let env = std::env::var("SOURCE_DATE_EPOCH").ok();
    Ok(Provenance {
        created: source_date_epoch(
            env.as_deref(),
            git(&["log", "-1", "--format=%ct"]).as_deref(),
        )?,
        revision: git(&["rev-parse", "HEAD"]),
        source: env!("CARGO_PKG_REPOSITORY").to_owned(),
        licenses: env!("CARGO_PKG_LICENSE").to_owned(),
    })
}

/// A scratch directory in the output directory, removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(out_dir: &Path, name: &str) -> Result<Self> {
        let dir = out_dir.join(format!(".work-{name}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An image's files and its description label (with the busybox version where it has one).
pub struct Gathered {
    pub rootfs: Rootfs,
    pub description: String,
}

/// Prepares the files of `def` in scratch directory `work`: binaries from `bin_dir` stripped,
/// C programs compiled, packages extracted, and the shared libraries of every dynamic ELF.
///
/// # Errors
/// When a tool, file or package is missing or fails.
pub fn gather(def: &ImageDef, bin_dir: &Path, work: &Path) -> Result<Gathered> {
    let mut rootfs = Rootfs::default();
    let mut description = def.description.to_owned();
    // ELF files whose shared libraries the image needs (paths on this machine).
    let mut dynamic = Vec::new();
    for content in def.contents {
        match *content {
            Content::Binary(name) => {
                let src = bin_dir.join(name);
                if !src.is_file() {
                    bail!("{} is missing: {}", src.display(), build_hint(bin_dir));
                }
                let stripped = work.join(name);
                cmd::run(Command::new("strip").arg("-o").arg(&stripped).arg(&src))?;
                rootfs.file(&format!("usr/local/bin/{name}"), 0o755, read(&stripped)?);
                dynamic.push(stripped);
            }
            Content::Host { path, package } => {
                if !Path::new(path).is_file() {
                    bail!("{path} is missing: `apt-get install {package}` (Debian package)");
                }
                rootfs.file(path, 0o755, read(Path::new(path))?);
                dynamic.push(PathBuf::from(path));
            }
            Content::StaticC { source, path } => {
                rootfs.file(path, 0o755, compile_static(source, work)?);
            }
            Content::Busybox { package } => {
                let version = add_busybox(&mut rootfs, package, work)?;
                description = format!("{description} from Debian {package} {version}");
            }
            Content::File { path, mode, text } => rootfs.file(path, mode, text),
            Content::Dir { path, mode } => rootfs.dir(path, mode),
        }
    }
    let mut libs = BTreeSet::new();
    for elf in &dynamic {
        let out = cmd::run(Command::new("ldd").arg(elf))?;
        libs.extend(parse_ldd(&out).with_context(|| format!("libraries of {}", elf.display()))?);
    }
    for lib in libs {
        if !rootfs.contains(&lib) {
            // Read through symlinks (`/lib64/ld-linux-x86-64.so.2` → …): the image gets a
            // file at the path the loader asks for. Executable: the kernel execs the
            // interpreter.
            rootfs.file(&lib, 0o755, read(Path::new(&lib))?);
        }
    }
    Ok(Gathered {
        rootfs,
        description,
    })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// `gcc -static -Os` of `source` (relative to the workspace), stripped.
fn compile_static(source: &str, work: &Path) -> Result<Vec<u8>> {
    let src = workspace_root().join(source);
    let out = work.join(
        Path::new(source)
            .file_stem()
            .with_context(|| format!("{source} has no file name"))?,
    );
    cmd::run(
        Command::new("gcc")
            .args(["-static", "-Os", "-Wall", "-o"])
            .arg(&out)
            .arg(&src),
    )
    .with_context(|| {
        format!("compiling {source} (a static binary needs libc.a: `apt-get install libc6-dev`)")
    })?;
    cmd::run(Command::new("strip").arg(&out))?;
    read(&out)
}

/// Where downloaded Debian packages are kept: `$CAUSEWAY_CACHE/debs`
/// (default `/var/cache/causeway/debs`), reused by later builds.
#[must_use]
pub fn deb_cache() -> PathBuf {
    std::env::var_os("CAUSEWAY_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/causeway"), PathBuf::from)
        .join("debs")
}

/// The cached `.deb` of `package`, downloaded with `apt-get download` when absent. With
/// several cached versions, the last by name; remove the cache to take a newer one.
pub(crate) fn fetch_deb(package: &str) -> Result<PathBuf> {
    let cache = deb_cache();
    let cached = || -> Result<Option<PathBuf>> {
        if !cache.is_dir() {
            return Ok(None);
        }
        let prefix = format!("{package}_");
        let mut debs: Vec<PathBuf> = std::fs::read_dir(&cache)
            .with_context(|| format!("listing {}", cache.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .collect();
        debs.sort();
        Ok(debs.pop())
    };
    if let Some(deb) = cached()? {
        return Ok(deb);
    }
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    cmd::run(
        Command::new("apt-get")
            .args(["download", package])
            .current_dir(&cache),
    )
    .with_context(|| {
        format!(
            "downloading the Debian package {package} into {} (`apt-get update` first?)",
            cache.display()
        )
    })?;
    cached()?.with_context(|| {
        format!(
            "apt-get download left no {package}_*.deb in {}",
            cache.display()
        )
    })
}

/// Adds `/bin/busybox` of `package` and a `/bin/<applet>` symlink for each applet; returns the
/// package version.
fn add_busybox(rootfs: &mut Rootfs, package: &str, work: &Path) -> Result<String> {
    let deb = fetch_deb(package)?;
    let version = cmd::run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"))?
        .trim()
        .to_owned();
    let dir = work.join(package);
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    let busybox = dir.join("bin/busybox");
    if !busybox.is_file() {
        bail!("{} has no bin/busybox", deb.display());
    }
    // Statically linked, so it runs here to list its applets.
    let list = cmd::run(Command::new(&busybox).arg("--list"))?;
    rootfs.file("bin/busybox", 0o755, read(&busybox)?);
    for applet in applets(&list) {
        rootfs.symlink(&format!("bin/{applet}"), "busybox");
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn spec() -> Spec {
        Spec {
            repository: "ghcr.io/causeway-dev/causeway".into(),
            tag: "0.1.0".into(),
            architecture: "amd64".into(),
            created: 1_764_892_800,
            entrypoint: vec![],
            cmd: vec!["sh".into()],
            labels: BTreeMap::from([("org.opencontainers.image.title".into(), "t".into())]),
        }
    }

    fn rootfs() -> Rootfs {
        let mut r = Rootfs::default();
        r.file("/usr/local/bin/tool", 0o755, b"\x7fELF-ish".to_vec());
        r.file("/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n");
        r.symlink("/bin/sh", "busybox");
        r.dir("/tmp", 0o1777);
        r
    }

    /// `(path, mode, uid, gid, mtime, type, content or link target)` of every entry of a tar.
    type Row = (String, u32, u64, u64, u64, tar::EntryType, Vec<u8>);

    fn entries(tar_bytes: &[u8]) -> Vec<Row> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut rows = Vec::new();
        for entry in archive.entries().expect("tar") {
            let mut entry = entry.expect("entry");
            let h = entry.header().clone();
            let path = String::from_utf8(entry.path_bytes().to_vec()).expect("utf-8");
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            if let Some(link) = entry.link_name_bytes() {
                data = link.to_vec();
            }
            rows.push((
                path,
                h.mode().expect("mode"),
                h.uid().expect("uid"),
                h.gid().expect("gid"),
                h.mtime().expect("mtime"),
                h.entry_type(),
                data,
            ));
        }
        rows
    }

    fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
        let hex = digest.trim_start_matches("sha256:");
        files
            .get(&format!("blobs/sha256/{hex}"))
            .unwrap_or_else(|| panic!("no blob {digest}"))
    }

    fn files(archive: &Archive) -> BTreeMap<String, Vec<u8>> {
        entries(&archive.bytes)
            .into_iter()
            .filter(|r| r.5 == tar::EntryType::Regular)
            .map(|r| (r.0, r.6))
            .collect()
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).expect("json")
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("gzip");
        out
    }

    #[test]
    fn same_inputs_give_a_byte_identical_archive_whatever_the_insertion_order() {
        let a = archive(&spec(), &rootfs()).expect("archive");
        let mut reversed = Rootfs::default();
        reversed.dir("/tmp", 0o1777);
        reversed.symlink("/bin/sh", "busybox");
        reversed.file("/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n");
        reversed.file("/usr/local/bin/tool", 0o755, b"\x7fELF-ish".to_vec());
        let b = archive(&spec(), &reversed).expect("archive");
        assert_eq!(a, b);
        let mut other = spec();
        other.created += 1;
        assert_ne!(archive(&other, &rootfs()).expect("archive").bytes, a.bytes);
    }

    #[test]
    fn every_blob_is_named_by_the_sha256_of_its_content() {
        let a = archive(&spec(), &rootfs()).expect("archive");
        let files = files(&a);
        let blobs: Vec<_> = files
            .iter()
            .filter(|(p, _)| p.starts_with("blobs/sha256/"))
            .collect();
        assert_eq!(blobs.len(), 3, "layer, config, manifest");
        for (path, data) in blobs {
            assert_eq!(
                format!("blobs/sha256/{}", hex::encode(Sha256::digest(data))),
                *path
            );
        }
        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    }

    #[test]
    fn index_names_the_manifest_with_the_full_reference_and_the_tag() {
        let a = archive(&spec(), &rootfs()).expect("archive");
        let files = files(&a);
        let index = json(&files["index.json"]);
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], MEDIA_INDEX);
        let m = &index["manifests"][0];
        assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
        assert_eq!(m["digest"], a.manifest.to_string());
        assert_eq!(m["mediaType"], MEDIA_MANIFEST);
        assert_eq!(
            m["annotations"][ANNOTATION_CONTAINERD_NAME],
            "ghcr.io/causeway-dev/causeway:0.1.0"
        );
        assert_eq!(m["annotations"][ANNOTATION_REF_NAME], "0.1.0");
        assert_eq!(m["platform"]["architecture"], "amd64");
        assert_eq!(m["platform"]["os"], "linux");
        let manifest = blob(&files, &a.manifest.to_string());
        assert_eq!(m["size"], manifest.len());
    }

    #[test]
    fn manifest_points_at_the_config_and_the_gzipped_layer_whose_diff_id_the_config_holds() {
        let a = archive(&spec(), &rootfs()).expect("archive");
        let files = files(&a);
        let manifest = json(blob(&files, &a.manifest.to_string()));
        assert_eq!(manifest["config"]["digest"], a.config.to_string());
        assert_eq!(manifest["config"]["mediaType"], MEDIA_CONFIG);
        let layer_desc = &manifest["layers"][0];
        assert_eq!(layer_desc["mediaType"], MEDIA_LAYER);
        let layer = blob(&files, layer_desc["digest"].as_str().expect("digest"));
        assert_eq!(layer_desc["size"], layer.len());
        let config = json(blob(&files, &a.config.to_string()));
        let uncompressed = gunzip(layer);
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            Digest::of(&uncompressed).to_string()
        );
        assert_eq!(config["rootfs"]["diff_ids"][0], a.diff_id.to_string());
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["created"], "2025-12-05T00:00:00Z");
        assert_eq!(config["config"]["Env"][0], PATH_ENV);
        assert_eq!(config["config"]["Cmd"][0], "sh");
        assert!(config["config"].get("Entrypoint").is_none());
        assert_eq!(config["config"]["WorkingDir"], "/");
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.title"],
            "t"
        );
    }

    #[test]
    fn layer_is_sorted_with_parents_first_owned_by_root_at_the_fixed_time() {
        let layer = layer_tar(&rootfs(), 1234).expect("layer");
        let rows = entries(&layer);
        let paths: Vec<_> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin/",
                "bin/sh",
                "etc/",
                "etc/passwd",
                "tmp/",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/tool"
            ]
        );
        for (path, mode, uid, gid, mtime, kind, data) in &rows {
            assert_eq!((*uid, *gid, *mtime), (0, 0, 1234), "{path}");
            let want = match path.as_str() {
                "tmp/" => 0o1777,
                "etc/passwd" => 0o644,
                "bin/sh" => 0o777,
                _ => 0o755,
            };
            assert_eq!(*mode, want, "{path}");
            if path == "bin/sh" {
                assert_eq!(*kind, tar::EntryType::Symlink);
                assert_eq!(data, b"busybox");
            }
        }
    }

    #[test]
    fn gzip_header_has_no_name_and_no_time() {
        let gz = gzip(b"hello").expect("gzip");
        // ID1 ID2 CM FLG MTIME(4) XFL OS (RFC 1952)
        assert_eq!(
            &gz[..4],
            &[0x1f, 0x8b, 8, 0],
            "deflate, no FNAME/FCOMMENT/FEXTRA"
        );
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(gz[9], 255, "OS unknown");
        assert_eq!(gunzip(&gz), b"hello");
        assert_eq!(gzip(b"hello").expect("gzip"), gz);
    }

    #[test]
    fn source_date_epoch_wins_then_the_commit_time_then_zero() {
        let cases: &[(Option<&str>, Option<&str>, Option<i64>)] = &[
            (Some("1700000000"), Some("1600000000"), Some(1_700_000_000)),
            (None, Some("1600000000\n"), Some(1_600_000_000)),
            (None, None, Some(0)),
            (None, Some("garbage"), Some(0)),
            (Some("yesterday"), Some("1600000000"), None),
            (Some("-5"), None, None),
        ];
        for (env, git, want) in cases {
            assert_eq!(source_date_epoch(*env, *git).ok(), *want, "{env:?} {git:?}");
        }
    }

    #[test]
    fn created_is_rfc3339_utc() {
        assert_eq!(rfc3339(0).expect("time"), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_764_892_800).expect("time"),
            "2025-12-05T00:00:00Z"
        );
    }

    #[test]
    fn labels_carry_title_version_revision_source_licenses_and_created() {
        let prov = Provenance {
            created: 0,
            revision: Some("abc123".into()),
            source: "https://github.com/causeway-dev/causeway".into(),
            licenses: "Apache-2.0".into(),
        };
        let l = labels(&CAUSEWAY, "0.2.0", "desc", &prov).expect("labels");
        let get = |k: &str| l[&format!("org.opencontainers.image.{k}")].as_str();
        assert_eq!(get("title"), "causeway");
        assert_eq!(get("description"), "desc");
        assert_eq!(get("version"), "0.2.0");
        assert_eq!(get("revision"), "abc123");
        assert_eq!(get("source"), "https://github.com/causeway-dev/causeway");
        assert_eq!(get("licenses"), "Apache-2.0");
        assert_eq!(get("created"), "1970-01-01T00:00:00Z");
        assert_eq!(l.len(), 7);
        let no_git = Provenance {
            revision: None,
            ..prov
        };
        let l = labels(&PAUSE, "0.2.0", "d", &no_git).expect("labels");
        assert_eq!(l["org.opencontainers.image.version"], "1");
        assert!(!l.contains_key("org.opencontainers.image.revision"));
    }

    #[test]
    fn ldd_output_gives_libraries_and_the_interpreter_but_not_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc5a1f2000)\n\
                   \tlibnftables.so.1 => /lib/x86_64-linux-gnu/libnftables.so.1 (0x00007f0e1c000000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1be00000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1c2a0000)\n";
        assert_eq!(
            parse_ldd(out).expect("ldd"),
            [
                "/lib/x86_64-linux-gnu/libnftables.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").expect("ldd").is_empty());
        assert!(
            parse_ldd("\tnot a dynamic executable\n")
                .expect("ldd")
                .is_empty()
        );
        let err = parse_ldd("\tlibgone.so.3 => not found\n").expect_err("missing");
        assert!(err.to_string().contains("libgone.so.3"), "{err}");
    }

    #[test]
    fn busybox_applets_become_symlinks_except_busybox_itself() {
        assert_eq!(
            applets("[\n[[\nash\nbusybox\nnc\n\n"),
            ["[", "[[", "ash", "nc"]
        );
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        for ok in ["0.1.0", "1", "0.1.0-rc.1", "_x", "v1_2"] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in [
            "",
            "0.1.0+build",
            ".x",
            "-x",
            "a/b",
            "a:b",
            &"x".repeat(129),
        ] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn image_table_names_references_archives_and_tools() {
        assert_eq!(
            CAUSEWAY.reference("0.1.0"),
            "ghcr.io/causeway-dev/causeway:0.1.0"
        );
        assert_eq!(CAUSEWAY.archive_name("0.1.0"), "causeway-0.1.0.tar");
        assert_eq!(PAUSE.reference("0.1.0"), "localhost/causeway-e2e/pause:1");
        assert_eq!(PAUSE.archive_name("0.1.0"), "pause.tar");
        assert_eq!(
            TESTPOD.reference("0.1.0"),
            "localhost/causeway-e2e/testpod:1"
        );
        assert_eq!(TESTPOD.archive_name("0.1.0"), "testpod.tar");
        let tools = |d: &ImageDef| d.tools().into_iter().map(|t| t.0).collect::<Vec<_>>();
        assert_eq!(tools(&CAUSEWAY), ["ldd", "strip"]);
        assert_eq!(tools(&PAUSE), ["gcc", "strip"]);
        assert_eq!(tools(&TESTPOD), ["apt-get", "dpkg-deb"]);
        assert_eq!(oci_architecture("x86_64"), Some("amd64"));
        assert_eq!(oci_architecture("aarch64"), Some("arm64"));
    }

    #[test]
    fn rootfs_adds_missing_parents_and_keeps_explicit_directory_modes() {
        let mut r = Rootfs::default();
        r.dir("/tmp", 0o1777);
        r.file("/tmp/x/y", 0o600, "y");
        let got: Vec<_> = r
            .entries()
            .map(|(p, n)| (p.to_owned(), n.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("tmp".to_owned(), Entry::Dir { mode: 0o1777 }),
                ("tmp/x".to_owned(), Entry::Dir { mode: 0o755 }),
                (
                    "tmp/x/y".to_owned(),
                    Entry::File {
                        mode: 0o600,
                        data: b"y".to_vec()
                    }
                ),
            ]
        );
        assert!(r.contains("/tmp/x"));
    }
}
