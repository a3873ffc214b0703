//! The project-local virtualenv that holds moto (and cfn-lint, which it brings), installed on
//! first use with pinned versions.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::printer::Printer;

/// Pinned: the sandbox's behaviour is measured against these versions (see the fidelity notes).
pub const REQUIREMENTS: &[&str] = &["moto[server]==5.2.5", "cfn-lint==1.58.0"];

pub fn venv_dir() -> PathBuf {
    std::env::var_os("QUELL_VENV")
        .map_or_else(|| super::state::quell_home().join("venv"), PathBuf::from)
}

pub fn bin(name: &str) -> PathBuf {
    venv_dir().join("bin").join(name)
}

/// Creates the virtualenv and installs the pinned packages unless they are already there.
pub async fn ensure(printer: &Printer) -> anyhow::Result<()> {
    let dir = venv_dir();
    let marker = dir.join(".quell-requirements");
    let wanted = REQUIREMENTS.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) && bin("moto_server").exists() {
        return Ok(());
    }
    let task = printer.task(&format!(
        "installing {} into {}",
        REQUIREMENTS.join(", "),
        dir.display()
    ));
    if !dir.join("bin/python").exists() {
        let python = std::env::var("QUELL_PYTHON").unwrap_or_else(|_| "python3".into());
        let status = tokio::process::Command::new(&python)
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .await
            .with_context(|| format!("cannot run {python}: the sandbox needs Python 3.9 or later (set QUELL_PYTHON to choose one)"))?;
        if !status.success() {
            task.fail();
            bail!(
                "`{python} -m venv {}` failed; on Debian and Ubuntu install python3-venv",
                dir.display()
            );
        }
    }
    let mut child = tokio::process::Command::new(dir.join("bin/pip"))
        .args([
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
        ])
        .args(REQUIREMENTS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run pip in the sandbox virtualenv")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    while let Some(line) = lines.next_line().await? {
        if line.starts_with("Collecting") || line.starts_with("Installing") {
            task.update(&format!("pip: {}", line.trim()));
        }
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        task.fail();
        bail!(
            "pip could not install {}:\n{}",
            REQUIREMENTS.join(", "),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    std::fs::write(&marker, wanted)?;
    task.done(&format!("installed {}", REQUIREMENTS.join(", ")));
    Ok(())
}
