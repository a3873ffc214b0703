//! What `quell sandbox up` remembers for later commands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxState {
    pub endpoint: String,
    pub port: u16,
    pub moto_pid: u32,
    pub host_pid: Option<u32>,
    pub iam_enforcement: bool,
    pub organization_id: String,
    pub root_id: String,
    pub management_account: String,
    pub security_account: String,
    pub member_accounts: Vec<String>,
    pub organizational_units: Vec<OrganizationalUnit>,
    pub regions: Vec<String>,
    /// Role every account trusts from the management account (as AWS Organizations creates it).
    pub account_access_role: String,
    /// The sandbox administrator in the management account. Only valid against the sandbox.
    pub admin: AccessKey,
    /// A ready configuration for this organization, for `quell install --config`.
    pub config_path: PathBuf,
    pub seeded: Vec<Seeded>,
    /// Execution environments the local Lambda host runs at once (`sandbox up --environments`).
    #[serde(default = "one_environment")]
    pub environments: u16,
}

fn one_environment() -> u16 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrganizationalUnit {
    pub id: String,
    pub path: String,
    pub accounts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// One resource the seed created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seeded {
    pub account: String,
    pub region: String,
    pub kind: String,
    pub arn: String,
    /// What about it a playbook or a test cares about ("open to 0.0.0.0/0 on 22", an access key id).
    pub note: String,
    /// Credentials of a seeded user, for tests that act as it. Sandbox-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<AccessKey>,
}

/// The folder for everything local: `QUELL_HOME`, or `.quell` in the current folder.
pub fn quell_home() -> PathBuf {
    std::env::var_os("QUELL_HOME").map_or_else(|| PathBuf::from(".quell"), PathBuf::from)
}

pub fn sandbox_dir() -> PathBuf {
    quell_home().join("sandbox")
}

fn state_path() -> PathBuf {
    sandbox_dir().join("state.json")
}

impl SandboxState {
    pub fn load() -> anyhow::Result<SandboxState> {
        let path = state_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                anyhow::bail!(
                    "no sandbox is running here ({} is missing): run `quell sandbox up` first",
                    path.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged: run `quell sandbox down` and `quell sandbox up`",
                path.display()
            )
        })
    }

    pub fn exists() -> bool {
        state_path().exists()
    }

    pub fn save(&self) -> anyhow::Result<()> {
        write_private(
            &state_path(),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    pub fn remove() -> anyhow::Result<()> {
        match std::fs::remove_file(state_path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Writes a file only its owner can read: the state holds sandbox credentials.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
