//! Packaging the responder: `bootstrap` in a zip, byte-for-byte the same for the same binary. The
//! content address is the binary's SHA-256, so telling whether a build is already deployed costs
//! a hash, and the archive is only made when it is uploaded.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use crate::config::Architecture;

#[derive(Debug)]
pub struct Package {
    bytes: Vec<u8>,
    /// SHA-256 of the binary.
    pub sha256: String,
    pub binary: PathBuf,
}

impl Package {
    /// Content-addressed object key.
    pub fn key(&self) -> String {
        key_for(&self.sha256)
    }

    /// The deployment archive: a fixed timestamp and mode, so it depends on the binary alone.
    pub fn zip(&self) -> anyhow::Result<Vec<u8>> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(0o755);
        zip.start_file("bootstrap", options)?;
        zip.write_all(&self.bytes)?;
        Ok(zip.finish()?.into_inner())
    }
}

/// The object key of the package of a binary whose SHA-256 is `sha256`.
fn key_for(sha256: &str) -> String {
    format!("responder/{sha256}.zip")
}

/// The object key `binary` would be packaged under, read without keeping it in memory (for
/// `quell --version`, which need not package it).
pub fn key_of(binary: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(key_for(&hex::encode(hasher.finalize())))
}

/// The `bootstrap` next to the running `quell`: both are built by the same `cargo build`.
pub fn default_bootstrap() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the quell executable")?;
    let path = exe.with_file_name("bootstrap");
    if !path.exists() {
        bail!(
            "no responder binary at {}: build it (`cargo build -p quell-responder`, or for AWS `cargo lambda build --release --arm64 -p quell-responder`) or pass --bootstrap PATH",
            path.display()
        );
    }
    Ok(path)
}

pub fn build(binary: &Path, architecture: Architecture) -> anyhow::Result<Package> {
    let bytes = std::fs::read(binary)
        .with_context(|| format!("cannot read the responder binary {}", binary.display()))?;
    check_architecture(binary, &bytes, architecture)?;
    Ok(Package {
        sha256: hex::encode(Sha256::digest(&bytes)),
        bytes,
        binary: binary.to_owned(),
    })
}

/// A binary for the wrong architecture deploys fine and fails on every invocation: refuse it here.
fn check_architecture(path: &Path, bytes: &[u8], expected: Architecture) -> anyhow::Result<()> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        bail!(
            "{} is not a Linux executable (ELF); the responder runs on Lambda's provided.al2023",
            path.display()
        );
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    let found = match machine {
        0x3e => Architecture::X86_64,
        0xb7 => Architecture::Arm64,
        other => bail!(
            "{} is built for ELF machine {other:#x}; Lambda runs arm64 or x86_64",
            path.display()
        ),
    };
    if found != expected {
        bail!(
            "{} is an {} binary but responder.architecture is {}: build for {} or change responder.architecture",
            path.display(),
            found.lambda_name(),
            expected.lambda_name(),
            expected.lambda_name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_elf(machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b
    }

    #[test]
    fn the_same_binary_packages_to_the_same_address() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bootstrap");
        std::fs::write(&bin, fake_elf(0x3e)).unwrap();
        let a = build(&bin, Architecture::X86_64).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = build(&bin, Architecture::X86_64).unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(
            a.zip().unwrap(),
            b.zip().unwrap(),
            "the archive depends on the binary alone"
        );
        assert_eq!(a.key(), format!("responder/{}.zip", a.sha256));
        let mut changed = fake_elf(0x3e);
        changed[40] = 1;
        std::fs::write(&bin, changed).unwrap();
        assert_ne!(build(&bin, Architecture::X86_64).unwrap().sha256, a.sha256);
    }

    #[test]
    fn the_wrong_architecture_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bootstrap");
        std::fs::write(&bin, fake_elf(0x3e)).unwrap();
        let e = build(&bin, Architecture::Arm64).unwrap_err().to_string();
        assert!(
            e.contains("x86_64 binary but responder.architecture is arm64"),
            "{e}"
        );
        std::fs::write(&bin, b"#!/bin/sh\necho hi\n").unwrap();
        assert!(build(&bin, Architecture::X86_64)
            .unwrap_err()
            .to_string()
            .contains("not a Linux executable"));
    }
}
