//! The shared sandbox: started once for the whole run, with Quell installed, and helpers that read
//! the sandbox back with the AWS SDK as an operator would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use serde_json::Value;

pub const HOME: &str = "us-east-1";
pub const SECOND: &str = "eu-west-1";

pub struct Sandbox {
    pub home: tempfile::TempDir,
    pub bin: PathBuf,
    pub venv: PathBuf,
    /// `quell sandbox status --output json`.
    pub status: Value,
    /// The sandbox's own state file (credentials of seeded users live here).
    pub state: Value,
    pub runtime: tokio::runtime::Runtime,
    audit_queue: Mutex<Option<String>>,
    audit_seen: Mutex<Vec<Value>>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// `target/debug`, where cargo put `quell` and `bootstrap` next to this test binary's `deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

impl Sandbox {
    pub fn start() -> Result<Sandbox> {
        let bin = bin_dir().join("quell");
        for b in ["quell", "bootstrap"] {
            if !bin_dir().join(b).exists() {
                bail!("{} is missing: build with `cargo build --workspace --all-targets` first (scripts/test does)", bin_dir().join(b).display());
            }
        }
        let venv = std::env::var_os("QUELL_VENV")
            .map_or_else(|| repo().join(".quell/venv"), PathBuf::from);
        let sandbox = Sandbox {
            home: tempfile::tempdir()?,
            bin,
            venv,
            status: Value::Null,
            state: Value::Null,
            runtime: tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?,
            audit_queue: Mutex::new(None),
            audit_seen: Mutex::new(Vec::new()),
        };
        sandbox.must(&["sandbox", "up"])?;
        let mut sandbox = sandbox;
        sandbox.status = serde_json::from_slice(
            &sandbox
                .must(&["--output", "json", "sandbox", "status"])?
                .stdout,
        )?;
        sandbox.state = serde_json::from_str(&std::fs::read_to_string(
            sandbox.home.path().join("sandbox/state.json"),
        )?)?;
        sandbox.must(&[
            "--sandbox",
            "install",
            "--config",
            sandbox.config_path().to_str().unwrap_or_default(),
            "--yes",
        ])?;
        // Listen to the audit topic before any test publishes.
        let security = sandbox
            .runtime
            .block_on(sandbox.in_account(&sandbox.security(), HOME))?;
        sandbox.runtime.block_on(sandbox.audit_queue(&security))?;
        Ok(sandbox)
    }

    /// Where the built binaries are.
    pub fn bin_dir() -> PathBuf {
        bin_dir()
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// A copy of the sandbox configuration with `edit` applied to its text.
    pub fn config_variant(&self, name: &str, edit: impl Fn(&str) -> String) -> Result<PathBuf> {
        let text = std::fs::read_to_string(self.config_path())?;
        let path = self.home.path().join(name);
        std::fs::write(&path, edit(&text))?;
        Ok(path)
    }

    /// Waits until an upgrade's new function settings are what the next event meets: the sandbox
    /// host reads the deployment again every 3 s, as Lambda too applies a configuration update
    /// within seconds rather than at once.
    pub async fn settings_applied(&self) {
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    }

    pub fn config_path(&self) -> PathBuf {
        self.home.path().join("sandbox/quell.yaml")
    }

    /// Runs `quell` against this sandbox.
    pub fn quell(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("quell runs")
    }

    /// `quell` with `args`, against this sandbox, to start.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .env("QUELL_HOME", self.home.path())
            // Anything quell writes next to where it runs (a ledger export) stays in the sandbox.
            .current_dir(self.home.path())
            .env("QUELL_VENV", &self.venv)
            .env("NO_COLOR", "1")
            // Every operation each run called, for `permissions`, the last test.
            .env("QUELL_CALL_LOG", self.home.path().join("cli-calls.log"));
        command
    }

    /// Runs `quell` and fails with its output unless it exits 0.
    pub fn must(&self, args: &[&str]) -> Result<Output> {
        let out = self.quell(args);
        if !out.status.success() {
            bail!(
                "quell {} exited {:?}\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    pub fn stop(&self) -> Result<()> {
        let pids = [
            self.state["moto_pid"].as_u64(),
            self.state["host_pid"].as_u64(),
        ];
        self.must(&["sandbox", "down"])?;
        for pid in pids.into_iter().flatten() {
            if Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
            {
                bail!("process {pid} started by the sandbox is still running after `quell sandbox down`");
            }
        }
        Ok(())
    }

    pub fn endpoint(&self) -> &str {
        self.status["endpoint"].as_str().unwrap_or_default()
    }
    pub fn security(&self) -> String {
        self.status["accounts"]["security"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    pub fn management(&self) -> String {
        self.status["accounts"]["management"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    pub fn members(&self) -> Vec<String> {
        self.status["accounts"]["members"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
    pub fn user_arn(account: &str) -> String {
        format!("arn:aws:iam::{account}:user/ci-deployer")
    }

    /// The access key the seed gave the user in `account`.
    pub fn user_key(&self, account: &str) -> Result<(String, String)> {
        let arn = Self::user_arn(account);
        let s = self.state["seeded"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["arn"] == Value::String(arn.clone()))
            .with_context(|| format!("{arn} was not seeded"))?;
        Ok((
            s["access_key"]["access_key_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            s["access_key"]["secret_access_key"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ))
    }

    pub async fn with_keys(
        &self,
        key: &str,
        secret: &str,
        token: Option<String>,
        region: &str,
    ) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new(key, secret, token, None, "e2e"))
            // A moto HTTP 500 must not be retried into a second delivery.
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await
    }

    /// The management account's administrator.
    pub async fn admin(&self, region: &str) -> SdkConfig {
        let k = &self.state["admin"];
        self.with_keys(
            k["access_key_id"].as_str().unwrap_or_default(),
            k["secret_access_key"].as_str().unwrap_or_default(),
            None,
            region,
        )
        .await
    }

    /// A queue of the security account, as `quell` reaches it: a client and the queue's URL.
    pub async fn security_queue(&self, name: &str) -> Result<(aws_sdk_sqs::Client, String)> {
        let sqs = aws_sdk_sqs::Client::new(&self.in_account(&self.security(), HOME).await?);
        let url = sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await?
            .queue_url()
            .with_context(|| format!("no queue {name}"))?
            .to_owned();
        Ok((sqs, url))
    }

    /// Who `quell` sends requests as in the sandbox: the security account's caller.
    pub async fn requester(&self) -> Result<String> {
        Ok(
            aws_sdk_sts::Client::new(&self.in_account(&self.security(), HOME).await?)
                .get_caller_identity()
                .send()
                .await?
                .arn()
                .unwrap_or_default()
                .to_owned(),
        )
    }

    /// An administrator session in `account` (OrganizationAccountAccessRole, as on AWS).
    pub async fn in_account(&self, account: &str, region: &str) -> Result<SdkConfig> {
        let admin = self.admin(region).await;
        if account == self.management() {
            return Ok(admin);
        }
        let out = aws_sdk_sts::Client::new(&admin)
            .assume_role()
            .role_arn(format!(
                "arn:aws:iam::{account}:role/OrganizationAccountAccessRole"
            ))
            .role_session_name("e2e")
            .send()
            .await?;
        let c = out.credentials().context("no credentials")?;
        Ok(self
            .with_keys(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_owned()),
                region,
            )
            .await)
    }

    pub fn enforce_iam(&self, on: bool) -> Result<()> {
        let out = self.quell(&["sandbox", "iam", if on { "on" } else { "off" }]);
        if !out.status.success() {
            bail!(
                "cannot switch IAM enforcement: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Audit messages whose record key is `key`, waiting up to 20 s for at least `min` of them.
    pub async fn audit_for(&self, key: &str, min: usize) -> Result<Vec<Value>> {
        let security = self.in_account(&self.security(), HOME).await?;
        let sqs = aws_sdk_sqs::Client::new(&security);
        let queue = self.audit_queue(&security).await?;
        let start = Instant::now();
        loop {
            let received = sqs
                .receive_message()
                .queue_url(&queue)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await?;
            for m in received.messages() {
                let envelope: Value = serde_json::from_str(m.body().unwrap_or_default())?;
                let message: Value =
                    serde_json::from_str(envelope["Message"].as_str().unwrap_or_default())?;
                self.audit_seen.lock().expect("lock").push(message);
                if let Some(h) = m.receipt_handle() {
                    sqs.delete_message()
                        .queue_url(&queue)
                        .receipt_handle(h)
                        .send()
                        .await?;
                }
            }
            let found: Vec<Value> = self
                .audit_seen
                .lock()
                .expect("lock")
                .iter()
                .filter(|m| m["record"]["key"] == Value::String(key.to_owned()))
                .cloned()
                .collect();
            if found.len() >= min || start.elapsed() > Duration::from_secs(20) {
                return Ok(found);
            }
        }
    }

    async fn audit_queue(&self, security: &SdkConfig) -> Result<String> {
        if let Some(q) = self.audit_queue.lock().expect("lock").clone() {
            return Ok(q);
        }
        let sqs = aws_sdk_sqs::Client::new(security);
        let url = sqs
            .create_queue()
            .queue_name("e2e-audit")
            .send()
            .await?
            .queue_url()
            .unwrap_or_default()
            .to_owned();
        let arn = format!("arn:aws:sqs:{HOME}:{}:e2e-audit", self.security());
        let topic = format!("arn:aws:sns:{HOME}:{}:quell-audit", self.security());
        aws_sdk_sns::Client::new(security)
            .subscribe()
            .topic_arn(topic)
            .protocol("sqs")
            .endpoint(arn)
            .send()
            .await?;
        *self.audit_queue.lock().expect("lock") = Some(url.clone());
        Ok(url)
    }

    /// The ExternalIds the install generated, read as the security account's administrator.
    pub async fn external_ids(&self) -> Result<Value> {
        let security = self.in_account(&self.security(), HOME).await?;
        let secret = aws_sdk_secretsmanager::Client::new(&security)
            .get_secret_value()
            .secret_id("quell/external-ids")
            .send()
            .await?;
        Ok(serde_json::from_str(
            secret.secret_string().unwrap_or_default(),
        )?)
    }

    pub async fn ledger(&self, key: &str) -> Result<Option<quell_responder::ledger::Record>> {
        let security = self.in_account(&self.security(), HOME).await?;
        let ledger = quell_responder::ledger::Ledger::new(
            aws_sdk_dynamodb::Client::new(&security),
            "quell-ledger",
        );
        Ok(ledger.get(key).await?)
    }
}
