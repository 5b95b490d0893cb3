//! The image under test: built once per set of inputs and cached in `build/hw-tests/`, keyed
//! by a hash of the build plan and latticed's bytes, so CI reuses it until something changes.

use crate::{repo_root, workspace_bin};
use lattice_image::arch::Arch;
use lattice_image::plan::{self, BuildSpec};
use lattice_image::tools::SystemRunner;
use std::path::PathBuf;
use std::time::Instant;

/// A built image.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub raw: PathBuf,
    pub qcow2: PathBuf,
    pub hash: String,
    /// Seconds the build took, when this call built it.
    pub build_secs: Option<f64>,
}

/// The latticed the image carries: `LATTICE_HW_LATTICED`, else the release build if present
/// (what providers get), else the one beside the tests.
fn latticed() -> PathBuf {
    if let Some(p) = std::env::var_os("LATTICE_HW_LATTICED") {
        return PathBuf::from(p);
    }
    let release = repo_root().join("target/release/latticed");
    if release.exists() {
        return release;
    }
    workspace_bin("latticed")
}

/// Builds the image unless a cached one matches the inputs.
pub fn cached_image() -> BuiltImage {
    let arch = Arch::host().expect("a supported host architecture");
    let latticed = latticed();
    let bytes = std::fs::read(&latticed).expect("read latticed");
    let base = repo_root().join("build/hw-tests");
    let mut spec = BuildSpec::new(arch, latticed, env!("CARGO_PKG_VERSION"));
    // The work directory (and its package cache) is shared with `lattice image build`.
    spec.work_dir = repo_root().join("build/image").join(arch.name());
    spec.seed = b"hw-tests".to_vec();
    spec.out_dir = base.join("image");
    let hash = plan::input_hash(&plan::plan(&spec).expect("plan"), &bytes);
    spec.out_dir = base.join(format!("image-{hash}"));
    let plan = plan::plan(&spec).expect("plan");
    let built = BuiltImage {
        raw: spec.raw_path(),
        qcow2: spec.qcow2_path(),
        hash: hash.clone(),
        build_secs: None,
    };
    if built.raw.exists() && spec.out_dir.join("SHA256SUMS").exists() {
        eprintln!("using cached image {}", built.raw.display());
        return built;
    }
    // Older images are of no further use.
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("image-") && name != format!("image-{hash}") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let started = Instant::now();
    lattice_image::build::execute(&plan, &mut SystemRunner::new()).expect("image build");
    BuiltImage {
        build_secs: Some(started.elapsed().as_secs_f64()),
        ..built
    }
}
