//! Running `nft -j` in the agent's network namespace.

use std::process::Stdio;

use nftables::schema::Nftables;
use tokio::io::AsyncWriteExt;

use super::rules::{interpret, interpret_snat, interpret_snat6, interpret6};
use crate::model::{NAT_TABLE, Nat, Nat6, SNAT_TABLE, Snat, Snat6};
/// Runs `nft` in the agent's network namespace (the process's own, or a named one for tests).
#[derive(Clone, Debug, Default)]
pub struct Nft {
    netns: Option<String>,
}

/// Why `nft` failed, in words for a condition.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NftError(String);

impl Nft {
    /// `nft` in the process's namespace, or through `ip netns exec NAME`.
    #[must_use]
    pub fn new(netns: Option<String>) -> Self {
        Self { netns }
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
            None => tokio::process::Command::new("nft"),
        };
        command
            .kill_on_drop(true)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// The NAT table as it is. Without the `nft` binary, nothing of the agent's can exist:
    /// `None`.
    ///
    /// # Errors
    /// When `nft` fails for another reason than a missing table, or prints unreadable JSON.
    pub async fn observe(&self) -> Result<Option<Nat>, NftError> {
        Ok(self.list("ip", NAT_TABLE, interpret).await?.flatten())
    }

    /// The `ip6` NAT table as it is (see [`Self::observe`]).
    ///
    /// # Errors
    /// As [`Self::observe`].
    pub async fn observe6(&self) -> Result<Option<Nat6>, NftError> {
        Ok(self.list("ip6", NAT_TABLE, interpret6).await?.flatten())
    }

    /// The BridgeHosts SNAT table as it is (see [`Self::observe`]).
    ///
    /// # Errors
    /// As [`Self::observe`].
    pub async fn observe_snat(&self) -> Result<Option<Snat>, NftError> {
        Ok(self.list("ip", SNAT_TABLE, interpret_snat).await?.flatten())
    }

    /// The `ip6` BridgeHosts SNAT table as it is (see [`Self::observe`]).
    ///
    /// # Errors
    /// As [`Self::observe`].
    pub async fn observe_snat6(&self) -> Result<Option<Snat6>, NftError> {
        Ok(self
            .list("ip6", SNAT_TABLE, interpret_snat6)
            .await?
            .flatten())
    }

    /// `read` of `nft -j list table <family> <table>`; `None` when the table or `nft` is
    /// missing.
    async fn list<T>(
        &self,
        family: &str,
        table: &str,
        read: impl FnOnce(&Nftables<'_>) -> T,
    ) -> Result<Option<T>, NftError> {
        let output = match self
            .command()
            .args(["-j", "list", "table", family, table])
            .output()
            .await
        {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(NftError(format!("cannot run nft: {e}"))),
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(NftError(format!(
                "nft list table {family} {table}: {}",
                stderr.trim()
            )));
        }
        let listing: Nftables<'_> = serde_json::from_slice(&output.stdout)
            .map_err(|e| NftError(format!("nft printed JSON the agent cannot read: {e}")))?;
        Ok(Some(read(&listing)))
    }

    /// Applies `batch` in one transaction.
    ///
    /// # Errors
    /// When `nft` is missing or refuses the batch (its message is quoted).
    pub async fn apply(&self, batch: &Nftables<'_>) -> Result<(), NftError> {
        let json = serde_json::to_vec(batch)
            .map_err(|e| NftError(format!("cannot encode the nftables batch: {e}")))?;
        let mut child = self.command().args(["-j", "-f", "-"]).spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                NftError(
                    "the nft binary is missing: install nftables on the node (the agent image ships it) or set natOutgoing: false"
                        .to_owned(),
                )
            } else {
                NftError(format!("cannot run nft: {e}"))
            }
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&json)
                .await
                .map_err(|e| NftError(format!("writing to nft: {e}")))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| NftError(format!("waiting for nft: {e}")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(NftError(format!(
                "nft refused the batch: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }
}
