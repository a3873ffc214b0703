//! What `quell` says about itself: `--version` with the build and the responder it would deploy,
//! `--help` with the exit codes, shell completions and the manual page. All come from the one
//! clap definition in `args.rs`, so none can drift from what the parser accepts.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::args::{Cli, ManArgs, Shell};
use crate::exit;
use crate::printer::Printer;

/// The command as parsed and documented: `--help` ends with the exit codes.
pub fn command() -> clap::Command {
    let command = Cli::command().after_long_help(exit::table_text());
    // Hashing the responder costs a read of the binary: only when the version is asked for.
    if std::env::args_os().any(|a| a == "--version" || a == "-V") {
        command.long_version(long_version(&crate::package::default_bootstrap()))
    } else {
        command
    }
}

/// `quell --version`: this build, and the responder package `install` would deploy from here
/// (the content address `quell status` shows as the responder build).
fn long_version(bootstrap: &anyhow::Result<PathBuf>) -> String {
    let build = format!(
        "{} (commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("QUELL_COMMIT")
    );
    let responder = match bootstrap {
        Ok(path) => match crate::package::key_of(path) {
            Ok(key) => format!("responder package {key} (sha256 of {})", path.display()),
            Err(e) => format!("responder package unknown: {e:#}"),
        },
        Err(_) => {
            "responder package: no bootstrap next to quell (pass --bootstrap to install)".to_owned()
        }
    };
    format!("{build}\n{responder}")
}

pub fn completions(shell: Shell) -> u8 {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command(), "quell", &mut std::io::stdout());
    exit::SUCCESS
}

pub fn man(args: &ManArgs, printer: &Printer) -> anyhow::Result<u8> {
    let command = command();
    let Some(out) = &args.out else {
        clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
        return Ok(exit::SUCCESS);
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    clap_mangen::generate_to(command, out)
        .with_context(|| format!("cannot write the manual pages to {}", out.display()))?;
    printer.result(
        &serde_json::json!({ "written": out.join("quell.1") }),
        || {
            format!(
                "wrote {} and a page per command\n",
                out.join("quell.1").display()
            )
        },
    );
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_commit_and_the_package_address() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bootstrap");
        std::fs::write(&bin, b"responder").unwrap();
        let text = long_version(&Ok(bin));
        assert!(text.contains(env!("QUELL_COMMIT")), "{text}");
        // sha256("responder")
        let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"responder"));
        assert!(
            text.contains(&format!("responder/{expected}.zip")),
            "{text}"
        );
        let missing = long_version(&Err(anyhow::anyhow!("none")));
        assert!(missing.contains("no bootstrap next to quell"), "{missing}");
    }

    #[test]
    fn the_readme_lists_the_exit_codes_the_cli_uses() {
        let readme = include_str!("../../README.md");
        for (code, meaning) in exit::TABLE {
            assert!(
                readme.contains(&format!("| {code} | {meaning} |")),
                "README.md's exit code table lacks {code}: {meaning}"
            );
        }
    }

    #[test]
    fn help_ends_with_every_exit_code() {
        let help = command().render_long_help().to_string();
        for (code, meaning) in exit::TABLE {
            assert!(help.contains(&format!("{code}  {meaning}")), "{help}");
        }
    }
}
