//! The moto server process: started on a free loopback port, stopped by the exact pid it got.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::venv;

pub struct Started {
    pub pid: u32,
    pub port: u16,
}

pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

pub fn start(port: u16, dir: &Path) -> anyhow::Result<Started> {
    std::fs::create_dir_all(dir)?;
    // An empty AMI catalogue: moto's default one slows every EC2 call.
    let amis = dir.join("amis.json");
    std::fs::write(&amis, "[]")?;
    let log = std::fs::File::create(dir.join("moto.log"))?;
    let child = std::process::Command::new(venv::bin("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        .env("MOTO_AMIS_PATH", &amis)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal must not take the sandbox down.
        .process_group(0)
        .spawn()
        .context("cannot start moto_server")?;
    Ok(Started {
        pid: child.id(),
        port,
    })
}

pub async fn wait_ready(endpoint: &str, pid: u32, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let start = Instant::now();
    while start.elapsed() < timeout {
        if !super::process::alive(pid) {
            bail!(
                "moto exited during start-up; see {}",
                super::state::sandbox_dir().join("moto.log").display()
            );
        }
        if let Ok(resp) = client.get(format!("{endpoint}/moto-api/")).send().await {
            if resp.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "moto did not answer on {endpoint} within {}s; see {}",
        timeout.as_secs(),
        super::state::sandbox_dir().join("moto.log").display()
    )
}

/// Turns IAM enforcement on (every request is checked against IAM policies) or off.
pub async fn set_iam_enforcement(endpoint: &str, on: bool) -> anyhow::Result<()> {
    let body = if on { "0" } else { "inf" };
    let resp = reqwest::Client::new()
        .post(format!("{endpoint}/moto-api/reset-auth"))
        .header("Content-Type", "text/plain")
        .body(body)
        .send()
        .await
        .context("cannot reach the sandbox")?;
    if !resp.status().is_success() {
        bail!(
            "moto refused to change IAM enforcement: HTTP {}",
            resp.status()
        );
    }
    Ok(())
}
