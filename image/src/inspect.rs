//! `lattice image inspect`: what an image contains, read from the manifest
//! (`/etc/lattice/release`) inside root slot A without mounting it: e2fsprogs' `debugfs`
//! opens the ext4 filesystem at the partition's byte offset (`IMAGE?offset=N`).

use crate::gpt::{GptError, GptTable};
use crate::layout::Role;
use crate::system::RELEASE_FILE;
use crate::tools::{Cmd, Runner, ToolError};
use std::collections::BTreeMap;
use std::path::Path;

/// The parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Release {
    /// `KEY=VALUE` header (image name, latticed version, architecture, suite, build time).
    pub fields: BTreeMap<String, String>,
    /// (package, version), as dpkg lists them.
    pub packages: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Gpt(#[from] GptError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{image}: root slot A holds no readable {RELEASE_FILE} (not a Lattice image, or damaged): {detail}")]
    NoManifest { image: String, detail: String },
}

impl Release {
    /// Parses the manifest text written by the build.
    pub fn parse(text: &str) -> Option<Release> {
        let (head, packages) = text.split_once("\n[packages]\n")?;
        let fields: BTreeMap<String, String> = head
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !fields.contains_key("LATTICED_VERSION") {
            return None;
        }
        let packages = packages
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(p, v)| (p.to_string(), v.to_string()))
            .collect();
        Some(Release { fields, packages })
    }

    pub fn version_of(&self, package: &str) -> Option<&str> {
        self.packages
            .iter()
            .find(|(p, _)| p == package)
            .map(|(_, v)| v.as_str())
    }
}

/// The `debugfs` command that prints the manifest of the ext4 filesystem at `offset`.
pub fn read_cmd(image: &Path, offset: u64) -> Cmd {
    Cmd::new("debugfs")
        .arg("-R")
        .arg(format!("cat {RELEASE_FILE}"))
        .arg(format!("{}?offset={offset}", image.display()))
        .capture()
}

/// Reads and parses the manifest of `image`.
pub fn inspect(image: &Path, runner: &mut dyn Runner) -> Result<Release, InspectError> {
    let table = GptTable::read(image)?;
    let root = table.find(Role::RootA.part_label(), image)?;
    runner.require(&["debugfs"])?;
    let out = runner
        .run(&read_cmd(image, root.offset_bytes()))
        .map_err(|e| InspectError::NoManifest {
            image: image.display().to_string(),
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out);
    Release::parse(&text).ok_or_else(|| InspectError::NoManifest {
        image: image.display().to_string(),
        detail: if text.trim().is_empty() {
            "empty".into()
        } else {
            "unrecognised format".into()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::FakeRunner;

    const MANIFEST: &str = "LATTICE_IMAGE=lattice-0.1.0-x86_64\nLATTICED_VERSION=0.1.0\n\
                            ARCH=x86_64\nBUILT_UNIX=1\n\n[packages]\ndocker.io 20.10.24\nrauc 1.8-2\n";

    #[test]
    fn parses_fields_and_packages() {
        let r = Release::parse(MANIFEST).unwrap();
        assert_eq!(r.fields["ARCH"], "x86_64");
        assert_eq!(r.version_of("rauc"), Some("1.8-2"));
        assert_eq!(r.packages.len(), 2);
        assert!(Release::parse("hello").is_none());
        assert!(Release::parse("A=b\n[packages]\nx 1\n").is_none());
    }

    #[test]
    fn reads_root_a_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("d.img");
        std::fs::write(
            &img,
            crate::gpt::tests::disk(&[("lattice-root-a", 40, 59)], 64 * 512),
        )
        .unwrap();
        let mut r = FakeRunner {
            outputs: vec![("debugfs".into(), MANIFEST.as_bytes().to_vec())],
            ..FakeRunner::default()
        };
        let rel = inspect(&img, &mut r).unwrap();
        assert_eq!(rel.fields["LATTICED_VERSION"], "0.1.0");
        assert!(r.ran[0].display().ends_with("d.img?offset=20480"));

        let mut empty = FakeRunner::default();
        let e = inspect(&img, &mut empty).unwrap_err();
        assert!(
            e.to_string().contains("no readable /etc/lattice/release"),
            "{e}"
        );
    }
}
