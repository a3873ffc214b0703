//! The CLI's own surface: rendering (checked by cfn-lint), configuration errors, sandbox status.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use libtest_mimic::{Failed, Trial};
use serde_json::Value;

use crate::support::Sandbox;
use crate::TestFn;

pub fn quell_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("quell")
}

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../quell.example.yaml")
}

pub fn offline() -> Vec<Trial> {
    vec![
        Trial::test(
            "config_errors_name_the_file_and_key_and_write_nothing",
            || config_errors().map_err(|e| Failed::from(format!("{e:#}"))),
        ),
        Trial::test(
            "declared_playbooks_are_checked_simulated_and_tested_without_aws",
            || declared_playbooks().map_err(|e| Failed::from(format!("{e:#}"))),
        ),
        Trial::test(
            "the_configuration_is_found_without_config_and_the_cli_documents_itself",
            || self_documented().map_err(|e| Failed::from(format!("{e:#}"))),
        ),
        Trial::test(
            "checkov_and_parliament_find_nothing_unexplained_in_the_rendered_templates",
            || scanners().map_err(|e| Failed::from(format!("{e:#}"))),
        ),
    ]
}

/// Pinned, like the sandbox's: a new release's new checks are taken on deliberately.
const SCANNERS: &[&str] = &["checkov==3.3.30", "parliament==1.6.4"];

/// A project-local virtualenv with the scanners, installed on first use.
fn scanner_venv() -> Result<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.quell/scanners");
    let marker = dir.join(".quell-requirements");
    let wanted = SCANNERS.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return Ok(dir);
    }
    let python = std::env::var("QUELL_PYTHON").unwrap_or_else(|_| "python3".into());
    let made = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&dir)
        .status()?;
    ensure!(
        made.success(),
        "`{python} -m venv {}` failed",
        dir.display()
    );
    let pip = Command::new(dir.join("bin/pip"))
        .args(["install", "--disable-pip-version-check", "--quiet"])
        .args(SCANNERS)
        .output()?;
    ensure!(
        pip.status.success(),
        "pip install {}: {}",
        SCANNERS.join(" "),
        String::from_utf8_lossy(&pip.stderr)
    );
    std::fs::write(&marker, wanted)?;
    Ok(dir)
}

/// checkov on every rendered template and parliament on every IAM policy in them: each finding
/// fixed, or explained in tests/scanners/explained.yaml.
fn scanners() -> Result<()> {
    let venv = scanner_venv()?;
    let dir = tempfile::tempdir()?;
    let out = Command::new(quell_bin())
        .args(["render", "--config"])
        .arg(example())
        .arg("--out")
        .arg(dir.path())
        .output()?;
    ensure!(
        out.status.success(),
        "render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scan = Command::new(venv.join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scanners/scan.py"))
        .arg(dir.path())
        .output()?;
    ensure!(
        scan.status.success(),
        "{}{}",
        String::from_utf8_lossy(&scan.stdout),
        String::from_utf8_lossy(&scan.stderr)
    );
    Ok(())
}

/// `quell` run in `dir` with `QUELL_CONFIG` set or not: status, stdout, stderr.
fn quell_in(
    dir: &Path,
    config_env: Option<&Path>,
    args: &[&str],
) -> Result<(bool, String, String)> {
    let mut command = Command::new(quell_bin());
    command.current_dir(dir).args(args).env("NO_COLOR", "1");
    match config_env {
        Some(p) => command.env("QUELL_CONFIG", p),
        None => command.env_remove("QUELL_CONFIG"),
    };
    let out = command.output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The configuration is found as the README says, and completions, manual page and version come
/// out of the same definitions the parser uses.
fn self_documented() -> Result<()> {
    let empty = tempfile::tempdir()?;
    let (ok, _, err) = quell_in(empty.path(), None, &["render", "--out", "out"])?;
    ensure!(!ok, "render with no configuration anywhere succeeded");
    for place in ["--config", "./quell.yaml", "QUELL_CONFIG (not set)"] {
        ensure!(
            err.contains(place),
            "the error does not name {place}: {err}"
        );
    }
    ensure!(
        !empty.path().join("out").exists(),
        "a failed render wrote its folder"
    );

    // QUELL_CONFIG alone.
    let (ok, out, err) = quell_in(empty.path(), Some(&example()), &["render", "--out", "out"])?;
    ensure!(
        ok && out.contains("wrote "),
        "render through QUELL_CONFIG: {err}"
    );

    // ./quell.yaml comes before QUELL_CONFIG: a broken local file is the one reported.
    let local = tempfile::tempdir()?;
    std::fs::write(
        local.path().join("quell.yaml"),
        std::fs::read_to_string(example())?.replace("regions:\n", "regoins:\n"),
    )?;
    let (ok, _, err) = quell_in(local.path(), Some(&example()), &["render", "--out", "out"])?;
    ensure!(
        !ok && err.contains("quell.yaml") && err.contains("unknown field `regoins`"),
        "./quell.yaml was not the one read: {err}"
    );
    // The playbook commands find it the same way.
    let (ok, _, err) = quell_in(empty.path(), None, &["playbook", "check"])?;
    ensure!(
        !ok && err.contains("QUELL_CONFIG (not set)"),
        "playbook check: {err}"
    );
    let good = tempfile::tempdir()?;
    std::fs::copy(example(), good.path().join("quell.yaml"))?;
    let (ok, out, err) = quell_in(good.path(), None, &["playbook", "check"])?;
    ensure!(
        ok && out.contains("quell.yaml"),
        "playbook check did not read ./quell.yaml: {out}{err}"
    );

    // Completions parse in their shell and offer the commands.
    let (ok, bash, _) = quell_in(empty.path(), None, &["completions", "bash"])?;
    ensure!(
        ok && bash.contains("install") && bash.contains("--config"),
        "bash completions: {bash}"
    );
    let script = empty.path().join("quell.bash");
    std::fs::write(&script, &bash)?;
    let parsed = Command::new("bash").arg("-n").arg(&script).output()?;
    ensure!(
        parsed.status.success(),
        "bash cannot parse the completions: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    for shell in ["zsh", "fish"] {
        let (ok, text, err) = quell_in(empty.path(), None, &["completions", shell])?;
        ensure!(ok && text.contains("contain"), "{shell} completions: {err}");
    }

    // The manual: a page per command, in roff.
    let (ok, _, err) = quell_in(empty.path(), None, &["man", "--out", "man"])?;
    ensure!(ok, "quell man --out: {err}");
    for page in [
        "quell.1",
        "quell-contain.1",
        "quell-install.1",
        "quell-report.1",
    ] {
        let text = std::fs::read_to_string(empty.path().join("man").join(page))
            .with_context(|| format!("no manual page {page}"))?;
        ensure!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not roff"
        );
    }

    // The version names the commit and the package the bootstrap next to quell makes.
    let (ok, version, _) = quell_in(empty.path(), None, &["--version"])?;
    ensure!(ok && version.contains("(commit "), "--version: {version}");
    let bootstrap = std::fs::read(quell_bin().with_file_name("bootstrap"))?;
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bootstrap));
    ensure!(
        version.contains(&format!("responder/{hash}.zip")),
        "--version does not name the package of the bootstrap next to quell ({hash}): {version}"
    );
    Ok(())
}

fn config_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = std::fs::read_to_string(example())?;
    let cases = [
        (
            good.replace("regions:\n", "regoins:\n"),
            "unknown field `regoins`",
        ),
        (
            good.replace("\"222233334444\"", "\"2222333344\""),
            "security_account: '2222333344' is not an account id; expected 12 digits",
        ),
        (
            good.replace("  - eu-west-1", "  - eu-wset-1"),
            "regions[1]: 'eu-wset-1' is not an AWS Region; did you mean eu-west-1?",
        ),
        (
            good.replace("    - ou-ab12-cdef3456\n", "")
                .replace("    - \"333344445555\"\n", "")
                .replace("  organizational_units:\n", "  organizational_units: []\n")
                .replace("  accounts:\n", "  accounts: []\n"),
            "targets: no organizational_units and no accounts",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&file, text)?;
        let out_dir = dir.path().join(format!("out-{i}"));
        let out = Command::new(quell_bin())
            .args(["render", "--config"])
            .arg(&file)
            .arg("--out")
            .arg(&out_dir)
            .env("NO_COLOR", "1")
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1),
            "case {i}: exit {:?}",
            out.status.code()
        );
        ensure!(
            stderr.contains(&file.display().to_string()),
            "case {i}: names the file: {stderr}"
        );
        ensure!(
            stderr.contains(expected),
            "case {i}: says '{expected}': {stderr}"
        );
        ensure!(!out_dir.exists(), "case {i}: nothing written");
    }
    Ok(())
}

/// The shipped playbooks through the real binary: `render` refuses a broken one with its file,
/// line and column; `playbook test` runs their tests; `simulate` shows the plan and calls nothing.
fn declared_playbooks() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
    let config = dir.path().join("quell.yaml");
    let good = std::fs::read_to_string(example())?;
    std::fs::write(
        &config,
        format!(
            "{good}\ndeclared_playbooks:\n  - include: {}\n",
            shipped.join("critical-cve.yaml").display()
        ),
    )?;
    let quell = |args: &[&str]| {
        Command::new(quell_bin())
            .args(args)
            .env("NO_COLOR", "1")
            // No AWS: a command that tried would fail for want of credentials and a Region.
            .env("AWS_ACCESS_KEY_ID", "")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .output()
    };
    let c = config.to_str().context("utf-8 path")?;
    let out = quell(&["playbook", "test", "--config", c])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "the shipped tests pass: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(stdout.contains("2 tests, 0 failed"), "{stdout}");

    let event = shipped.join("fixtures/events/inspector2-package-vulnerability.json");
    let resource = dir.path().join("resource.json");
    std::fs::write(&resource, r#"{"state": "running"}"#)?;
    let out = quell(&[
        "playbook",
        "simulate",
        "--config",
        c,
        "critical-cve",
        "--event",
        event.to_str().context("utf-8 path")?,
        "--resource",
        resource.to_str().context("utf-8 path")?,
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "trigger: matches",
        "target: i-0123456789abcdef0",
        "step quarantine (ec2.quarantine): run, writes",
        "undone by ec2.release_quarantine",
        "No AWS call was made.",
    ] {
        ensure!(
            stdout.contains(expected),
            "simulate shows '{expected}': {stdout}"
        );
    }
    let out = quell(&[
        "playbook",
        "simulate",
        "--config",
        c,
        "critical-cv",
        "--event",
        event.to_str().unwrap_or_default(),
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("did you mean `critical-cve`?"),
        "{stderr}"
    );

    // A quarantine that would block its own patch, caught by render before anything is written.
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(shipped.join("critical-cve.yaml"))?;
    std::fs::write(
        &broken,
        text.replace("profile: patch_egress", "profile: deny_all"),
    )?;
    let bad_config = dir.path().join("bad.yaml");
    std::fs::write(
        &bad_config,
        format!("{good}\ndeclared_playbooks:\n  - include: broken.yaml\n"),
    )?;
    let out_dir = dir.path().join("out");
    let out = quell(&[
        "render",
        "--config",
        bad_config.to_str().unwrap_or_default(),
        "--out",
        out_dir.to_str().unwrap_or_default(),
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .position(|l| l.contains("action: patch.install"))
        .context("the patch step")?
        + 1;
    ensure!(
        out.status.code() == Some(1)
            && stderr.contains(&format!("broken.yaml:{line}:5 (steps[5].action)"))
            && stderr.contains("deny_all quarantine"),
        "render names file, line, column and the problem: {stderr}"
    );
    ensure!(!out_dir.exists(), "nothing written");
    // Install checks them too, before it reaches for any AWS credential.
    let out = quell(&[
        "install",
        "--config",
        bad_config.to_str().unwrap_or_default(),
        "--yes",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && stderr.contains(&format!("broken.yaml:{line}:5")),
        "install refuses the broken playbook first: {stderr}"
    );
    Ok(())
}

pub fn online() -> Vec<(&'static str, TestFn)> {
    crate::online![
        rendered_templates_pass_cfn_lint,
        sandbox_status_lists_endpoint_accounts_regions_and_seeded_arns
    ]
}

async fn rendered_templates_pass_cfn_lint(s: Arc<Sandbox>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Declared playbooks add the central bus's rule, the members' forwarding of API calls, the
    // custom actions' routes, a schedule's rule and the document's setting: linted too.
    let calls = dir.path().join("calls.yaml");
    std::fs::write(&calls, crate::declared::CLOUDTRAIL_PLAYBOOK)?;
    let action = dir.path().join("action.yaml");
    std::fs::write(&action, crate::declared::CUSTOM_ACTION_PLAYBOOK)?;
    let schedule = dir.path().join("schedule.yaml");
    std::fs::write(&schedule, crate::declared::SCHEDULE_PLAYBOOK)?;
    let instance =
        crate::declared::repository().join("playbooks/guardduty-instance-compromise.yaml");
    let declared = s.config_variant("lint-declared.yaml", |text| {
        format!(
            "{text}declared_playbooks:\n  - include: {}\n  - include: {}\n  - include: {}\n  - include: {}\n",
            instance.display(),
            calls.display(),
            action.display(),
            schedule.display()
        )
    })?;
    for (name, config) in [
        ("example", example()),
        ("sandbox", s.config_path()),
        ("declared", declared),
    ] {
        let out_dir = dir.path().join(name);
        s.must(&[
            "render",
            "--config",
            config.to_str().unwrap_or_default(),
            "--out",
            out_dir.to_str().unwrap_or_default(),
        ])?;
        let files: Vec<_> = std::fs::read_dir(&out_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        ensure!(files.len() == 5, "five templates rendered: {files:?}");
        let lint = Command::new(s.venv.join("bin/cfn-lint"))
            .args(&files)
            .output()
            .context("cfn-lint from the sandbox virtualenv")?;
        // cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational.
        let code = lint.status.code().unwrap_or(-1);
        ensure!(
            code == 0,
            "{name}: cfn-lint exit {code}:\n{}{}",
            String::from_utf8_lossy(&lint.stdout),
            String::from_utf8_lossy(&lint.stderr)
        );
    }
    Ok(())
}

async fn sandbox_status_lists_endpoint_accounts_regions_and_seeded_arns(
    s: Arc<Sandbox>,
) -> Result<()> {
    let st: Value =
        serde_json::from_slice(&s.must(&["--output", "json", "sandbox", "status"])?.stdout)?;
    ensure!(
        st["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("http://127.0.0.1:")),
        "{}",
        st["endpoint"]
    );
    ensure!(st["running"] == true && st["host_running"] == true);
    ensure!(st["accounts"]["management"]
        .as_str()
        .is_some_and(|a| a.len() == 12));
    ensure!(st["accounts"]["security"]
        .as_str()
        .is_some_and(|a| a.len() == 12));
    ensure!(st["accounts"]["members"]
        .as_array()
        .is_some_and(|m| m.len() == 3));
    ensure!(st["regions"] == serde_json::json!(["us-east-1", "eu-west-1"]));
    let ous = st["organizational_units"].as_array().context("OUs")?;
    ensure!(
        ous.iter().any(|o| o["path"] == "/Workloads/Production"),
        "a nested OU: {ous:?}"
    );
    let kinds: Vec<&str> = st["seeded"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["kind"].as_str())
        .collect();
    for kind in [
        "iam_user",
        "iam_role",
        "lambda_function",
        "ec2_instance",
        "security_group",
        "s3_bucket",
        "ebs_snapshot",
    ] {
        ensure!(kinds.contains(&kind), "seeded {kind}: {kinds:?}");
    }
    ensure!(st["seeded"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|x| x["arn"].as_str().is_some_and(|a| a.starts_with("arn:aws:"))));
    ensure!(
        !st.to_string().contains("secret_access_key"),
        "status does not print credentials"
    );
    Ok(())
}
