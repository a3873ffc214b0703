//! Headless Chromium for the tests that look at a page as a person would: the DOM after the
//! page's own script ran, what the browser's console said, and a screenshot kept with the test
//! output (`target/test-output/`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// The page after its scripts ran, and the console's complaints.
pub struct Page {
    pub dom: String,
    /// Lines from the browser's log that report a script error, a refused resource or a policy
    /// violation: empty for a clean page.
    pub console_errors: Vec<String>,
}

/// Chromium from `QUELL_CHROMIUM`, or Debian's (`scripts/test` installs it when missing).
fn chromium() -> Result<PathBuf> {
    let path = std::env::var_os("QUELL_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    ensure!(
        path.is_file(),
        "no Chromium at {}: run scripts/test (it installs Debian's chromium), `apt-get install chromium`, or set QUELL_CHROMIUM",
        path.display()
    );
    Ok(path)
}

/// Where tests leave what a person may want to look at afterwards.
pub fn output_dir() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn headless(profile: &Path) -> Command {
    let mut c = Command::new(chromium().unwrap_or_else(|_| PathBuf::from("chromium")));
    // As root the sandbox cannot start; the network is closed, so nothing may reach out.
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1400,1800",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Opens `file` and returns its DOM and console errors; saves a screenshot as `screenshot`.
pub fn open(file: &Path, screenshot: &Path) -> Result<Page> {
    chromium()?;
    let profile = tempfile::tempdir()?;
    let url = format!("file://{}", file.canonicalize()?.display());
    let out = headless(profile.path())
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .context("cannot run chromium")?;
    ensure!(
        out.status.success(),
        "chromium --dump-dom {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console_errors = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| {
            l.contains("CONSOLE")
                || l.contains("Uncaught")
                || l.contains("Content Security Policy")
                || l.contains("Refused to")
        })
        .map(str::to_owned)
        .collect();
    let shot = headless(profile.path())
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(&url)
        .output()?;
    ensure!(
        shot.status.success() && screenshot.is_file(),
        "no screenshot of {url}: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    Ok(Page {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console_errors,
    })
}

impl Page {
    /// The value of `attribute` on the `<body>` element.
    pub fn body(&self, attribute: &str) -> Option<&str> {
        let body = &self.dom[self.dom.find("<body")?..];
        let tag = &body[..body.find('>')?];
        let start = tag.find(&format!("{attribute}=\""))? + attribute.len() + 2;
        let len = tag[start..].find('"')?;
        Some(&tag[start..start + len])
    }

    /// The page drew itself completely, with no script error and a quiet console.
    pub fn drawn_cleanly(&self) -> Result<()> {
        ensure!(
            self.body("data-ready") == Some("1"),
            "the page's script did not finish (errors: {:?}); console: {:?}",
            self.body("data-errors"),
            self.console_errors
        );
        ensure!(
            self.body("data-errors").is_none(),
            "script errors: {:?}",
            self.body("data-errors")
        );
        ensure!(
            self.console_errors.is_empty(),
            "the console reported: {:#?}",
            self.console_errors
        );
        Ok(())
    }

    /// The outer HTML of the first element whose opening tag contains `marker`.
    pub fn element(&self, tag: &str, marker: &str) -> Option<&str> {
        let mut from = 0;
        while let Some(i) = self.dom[from..].find(&format!("<{tag}")) {
            let start = from + i;
            let open_end = start + self.dom[start..].find('>')?;
            if self.dom[start..open_end].contains(marker) {
                let close = format!("</{tag}>");
                let end = start + self.dom[start..].find(&close)? + close.len();
                return Some(&self.dom[start..end]);
            }
            from = open_end;
        }
        None
    }
}
