//! Which configuration file a command reads when `--config` is not given.
//!
//! In order: `--config FILE`; with `--sandbox`, the sandbox's own; `./quell.yaml`; the file
//! `QUELL_CONFIG` names. The working directory comes before the environment so that a team's
//! repository checkout wins over a variable set long ago in a shell profile.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::args::GlobalArgs;
use crate::sandbox::state::SandboxState;

/// The variable that names a configuration file when neither `--config` nor `./quell.yaml` does.
pub const ENV_VAR: &str = "QUELL_CONFIG";
const IN_WORKING_DIRECTORY: &str = "quell.yaml";

pub fn find(global: &GlobalArgs, explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if global.sandbox {
        return Ok(SandboxState::load()?.config_path);
    }
    find_in(
        Path::new(IN_WORKING_DIRECTORY),
        std::env::var_os(ENV_VAR).map(PathBuf::from),
    )
}

fn find_in(local: &Path, from_env: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if local.is_file() {
        return Ok(local.to_owned());
    }
    match from_env {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => bail!(
            "{ENV_VAR} names {}, which is not a file: point it at the configuration `quell install` used, or pass --config FILE",
            p.display()
        ),
        None => bail!(
            "no configuration: looked for --config, then ./{IN_WORKING_DIRECTORY} in {}, then {ENV_VAR} (not set); pass --config FILE, create ./{IN_WORKING_DIRECTORY} (see quell.example.yaml), or use --sandbox",
            std::env::current_dir().map_or_else(|_| "this directory".into(), |d| d.display().to_string())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_working_directory_comes_before_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("quell.yaml");
        let other = dir.path().join("elsewhere.yaml");
        std::fs::write(&other, "name: x\n").unwrap();
        // Only the environment names one.
        assert_eq!(find_in(&local, Some(other.clone())).unwrap(), other);
        // Both: the working directory's.
        std::fs::write(&local, "name: y\n").unwrap();
        assert_eq!(find_in(&local, Some(other)).unwrap(), local);
    }

    #[test]
    fn none_found_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("quell.yaml");
        let e = find_in(&local, None).unwrap_err().to_string();
        for place in [
            "--config",
            "./quell.yaml",
            "QUELL_CONFIG (not set)",
            "--sandbox",
        ] {
            assert!(e.contains(place), "{e}");
        }
        let missing = dir.path().join("gone.yaml");
        let e = find_in(&local, Some(missing.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("QUELL_CONFIG names {}", missing.display())),
            "{e}"
        );
    }
}
