//! Size-limited workload volumes and the node's disk floor (issue 3, item 3, "Disk").
//!
//! Each declared volume is an ext4 filesystem in a file of exactly the declared size,
//! preallocated (`fallocate`, so the space is really set aside and the host's disk cannot fill
//! up behind the workload's back), loop-mounted (`mount -o loop,nosuid,nodev`) on the host and
//! handed to Docker as a `local` volume that binds the filesystem's `data/` directory. The
//! workload feels the limit as the kernel's ENOSPC, not as a periodic `du`.
//!
//! Binding `data/` rather than the mount point is a safety catch: when the filesystem is not
//! mounted (after a reboot, before latticed has mounted it again) `data/` does not exist and
//! Docker refuses to start the container, instead of letting it write into the host's disk.
//!
//! The floor: a new volume is only made when the free space left afterwards stays above
//! `floor_bytes` (the provider's own reserve); image pulls check the same floor. Both refuse
//! with a reason that names the figures.
//!
//! Layout under `dir` (0700, root): `<node>/<workload>/<volume>.ext4` and
//! `<node>/<workload>/<volume>.mnt/` (with `data/` inside once mounted). Files are made under a
//! temporary name and renamed, so a crash mid-way leaves no half-made volume under the real
//! name. Tools: `mkfs.ext4` (Debian's e2fsprogs), `mount`/`umount` (util-linux's mount).

use lattice_wire::msg::VolumeSpec;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The smallest volume: ext4 needs room for its own metadata.
pub const MIN_VOLUME_BYTES: u64 = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The disk would go below the provider's floor.
    #[error(
        "the node's disk is at its floor: {free} bytes free, {needed} needed, {floor} kept for \
         the provider"
    )]
    Floor { free: u64, needed: u64, floor: u64 },
    #[error("volume {volume}: {reason}")]
    Bad { volume: String, reason: String },
    #[error("volume {volume}: {tool} failed: {reason}")]
    Tool {
        volume: String,
        tool: String,
        reason: String,
    },
    #[error("volume {volume}: {path}: {source}")]
    Io {
        volume: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `Ok` when making `needed` bytes leaves at least `floor` free.
pub fn check_floor(free: u64, needed: u64, floor: u64) -> Result<(), VolumeError> {
    if free.saturating_sub(needed) < floor || free < needed {
        return Err(VolumeError::Floor {
            free,
            needed,
            floor,
        });
    }
    Ok(())
}

/// Where a node's sized volumes live and the floor they keep.
#[derive(Debug, Clone)]
pub struct VolumeHost {
    dir: PathBuf,
    floor_bytes: u64,
}

impl VolumeHost {
    pub fn new(dir: impl Into<PathBuf>, floor_bytes: u64) -> Self {
        VolumeHost {
            dir: dir.into(),
            floor_bytes,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn floor_bytes(&self) -> u64 {
        self.floor_bytes
    }

    fn workload_dir(&self, node_id: &str, workload_id: &str) -> PathBuf {
        self.dir.join(node_id).join(workload_id)
    }

    /// The filesystem image of a volume.
    pub fn image_path(&self, node_id: &str, workload_id: &str, volume: &str) -> PathBuf {
        self.workload_dir(node_id, workload_id)
            .join(format!("{volume}.ext4"))
    }

    /// Where the image is mounted.
    pub fn mount_path(&self, node_id: &str, workload_id: &str, volume: &str) -> PathBuf {
        self.workload_dir(node_id, workload_id)
            .join(format!("{volume}.mnt"))
    }

    /// What Docker binds into the container (exists only while mounted).
    pub fn data_path(&self, node_id: &str, workload_id: &str, volume: &str) -> PathBuf {
        self.mount_path(node_id, workload_id, volume).join("data")
    }

    /// Bytes free for unprivileged use on the filesystem holding `dir`.
    pub fn free_bytes(&self) -> Result<u64, VolumeError> {
        let probe = existing_ancestor(&self.dir);
        let st = nix::sys::statvfs::statvfs(&probe).map_err(|e| VolumeError::Io {
            volume: "(disk)".into(),
            path: probe.clone(),
            source: e.into(),
        })?;
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }

    /// Refuses when the disk is below the floor already (before pulling an image).
    pub fn check_free(&self) -> Result<(), VolumeError> {
        check_floor(self.free_bytes()?, 0, self.floor_bytes)
    }

    /// Makes the volume if it does not exist (within the floor), mounts it if it is not
    /// mounted, and returns the directory Docker binds. Blocking (runs tools).
    pub fn ensure(
        &self,
        node_id: &str,
        workload_id: &str,
        spec: &VolumeSpec,
    ) -> Result<PathBuf, VolumeError> {
        let vol = spec.name.as_str();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| VolumeError::Io {
                volume: vol.to_string(),
                path,
                source,
            }
        };
        if spec.size_bytes < MIN_VOLUME_BYTES {
            return Err(VolumeError::Bad {
                volume: vol.into(),
                reason: format!(
                    "size {} bytes is below the smallest volume ({MIN_VOLUME_BYTES} bytes)",
                    spec.size_bytes
                ),
            });
        }
        let wdir = self.workload_dir(node_id, workload_id);
        create_private_dirs(&self.dir, &wdir).map_err(io(&wdir))?;
        let image = self.image_path(node_id, workload_id, vol);
        match std::fs::metadata(&image) {
            Ok(m) if m.len() != spec.size_bytes => {
                return Err(VolumeError::Bad {
                    volume: vol.into(),
                    reason: format!(
                        "is {} bytes, the target asks for {}; resizing a volume is not \
                         supported (its data is kept as it is)",
                        m.len(),
                        spec.size_bytes
                    ),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                check_floor(self.free_bytes()?, spec.size_bytes, self.floor_bytes)?;
                self.make_image(vol, &image, spec.size_bytes)?;
            }
            Err(e) => return Err(io(&image)(e)),
        }
        let mnt = self.mount_path(node_id, workload_id, vol);
        std::fs::create_dir_all(&mnt).map_err(io(&mnt))?;
        if !is_mount_point(&mnt) {
            let opts = "loop,nosuid,nodev";
            run(
                vol,
                "mount",
                Command::new("mount")
                    .arg("-o")
                    .arg(opts)
                    .arg(&image)
                    .arg(&mnt),
            )?;
        }
        let data = mnt.join("data");
        if !data.exists() {
            std::fs::create_dir(&data).map_err(io(&data))?;
            // Any user in the container may write; only root reaches it on the host
            // (the parents are 0700).
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777))
                .map_err(io(&data))?;
        }
        Ok(data)
    }

    fn make_image(&self, vol: &str, image: &Path, size: u64) -> Result<(), VolumeError> {
        let tmp = image.with_extension("ext4.partial");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| VolumeError::Io {
                volume: vol.to_string(),
                path,
                source,
            }
        };
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let len = i64::try_from(size).map_err(|_| VolumeError::Bad {
            volume: vol.into(),
            reason: format!("size {size} is too large"),
        })?;
        nix::fcntl::fallocate(
            file.as_raw_fd(),
            nix::fcntl::FallocateFlags::empty(),
            0,
            len,
        )
        .map_err(|e| io(&tmp)(e.into()))?;
        drop(file);
        let made = run(
            vol,
            "mkfs.ext4",
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0", "-L"])
                .arg(label(vol))
                .arg(&tmp),
        );
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, image).map_err(io(image))
    }

    /// Mounts every volume of the node that is not mounted (after a reboot, before any of its
    /// containers starts again). Returns the volumes it mounted.
    pub fn mount_all(&self, node_id: &str) -> Result<Vec<PathBuf>, VolumeError> {
        let mut mounted = Vec::new();
        let node_dir = self.dir.join(node_id);
        let Ok(workloads) = std::fs::read_dir(&node_dir) else {
            return Ok(mounted);
        };
        for w in workloads.flatten() {
            let Ok(files) = std::fs::read_dir(w.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                if path.extension().and_then(|e| e.to_str()) != Some("ext4") {
                    continue;
                }
                let mnt = path.with_extension("mnt");
                if is_mount_point(&mnt) {
                    continue;
                }
                let vol = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                std::fs::create_dir_all(&mnt).map_err(|source| VolumeError::Io {
                    volume: vol.clone(),
                    path: mnt.clone(),
                    source,
                })?;
                run(
                    &vol,
                    "mount",
                    Command::new("mount")
                        .args(["-o", "loop,nosuid,nodev"])
                        .arg(&path)
                        .arg(&mnt),
                )?;
                mounted.push(mnt);
            }
        }
        Ok(mounted)
    }

    /// Unmounts and deletes every volume of the workload (it left the target).
    pub fn remove_workload(&self, node_id: &str, workload_id: &str) -> Result<(), VolumeError> {
        let wdir = self.workload_dir(node_id, workload_id);
        let Ok(entries) = std::fs::read_dir(&wdir) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let path = e.path();
            if is_mount_point(&path) {
                let vol = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                run(&vol, "umount", Command::new("umount").arg(&path))?;
            }
        }
        std::fs::remove_dir_all(&wdir).map_err(|source| VolumeError::Io {
            volume: format!("(all of {workload_id})"),
            path: wdir,
            source,
        })
    }
}

/// An ext4 label (16 bytes at most) from the volume name.
fn label(vol: &str) -> String {
    vol.chars().take(16).collect()
}

fn existing_ancestor(p: &Path) -> PathBuf {
    let mut p = p.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}

/// Creates `dir` (0700) and everything from it down to `leaf`, all 0700.
fn create_private_dirs(dir: &Path, leaf: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(leaf)?;
    let mut p = leaf.to_path_buf();
    loop {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))?;
        if p == dir || !p.pop() {
            return Ok(());
        }
    }
}

/// True when `path` is a mount point in this process's mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map(|m| m.into_iter().any(|mi| mi.mount_point == canon))
        .unwrap_or(false)
}

fn run(volume: &str, tool: &str, cmd: &mut Command) -> Result<(), VolumeError> {
    let out = cmd.output().map_err(|e| VolumeError::Tool {
        volume: volume.into(),
        tool: tool.into(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "not found (install Debian's {})",
                if tool == "mkfs.ext4" {
                    "e2fsprogs"
                } else {
                    "mount"
                }
            ),
            _ => e.to_string(),
        },
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(VolumeError::Tool {
        volume: volume.into(),
        tool: tool.into(),
        reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_counts_what_the_new_volume_takes() {
        assert!(check_floor(10 << 30, 1 << 30, 8 << 30).is_ok());
        let e = check_floor(10 << 30, 3 << 30, 8 << 30).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("floor") && text.contains(&(8u64 << 30).to_string()),
            "{text}"
        );
        // Below the floor already: even nothing more is refused.
        assert!(check_floor(1 << 30, 0, 2 << 30).is_err());
        // Needing more than is free never wraps around.
        assert!(check_floor(1, 2, 0).is_err());
    }

    #[test]
    fn paths_are_per_node_workload_and_volume() {
        let h = VolumeHost::new("/v", 0);
        assert_eq!(
            h.image_path("n", "w", "data"),
            Path::new("/v/n/w/data.ext4")
        );
        assert_eq!(
            h.data_path("n", "w", "data"),
            Path::new("/v/n/w/data.mnt/data")
        );
        assert_ne!(
            h.image_path("n2", "w", "data"),
            h.image_path("n", "w", "data")
        );
    }

    #[test]
    fn a_volume_below_the_minimum_is_refused_before_anything_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let h = VolumeHost::new(dir.path().join("v"), 0);
        let spec = VolumeSpec {
            name: "tiny".into(),
            mount_path: "/d".into(),
            size_bytes: 4096,
        };
        let e = h.ensure("n", "w", &spec).unwrap_err();
        assert!(e.to_string().contains("smallest volume"), "{e}");
        assert!(!dir.path().join("v").exists());
    }

    #[test]
    fn a_volume_past_the_floor_is_refused_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let h = VolumeHost::new(dir.path().join("v"), u64::MAX / 2);
        let spec = VolumeSpec {
            name: "data".into(),
            mount_path: "/d".into(),
            size_bytes: 8 << 20,
        };
        let e = h.ensure("n", "w", &spec).unwrap_err();
        assert!(matches!(e, VolumeError::Floor { .. }), "{e}");
        assert!(!h.image_path("n", "w", "data").exists());
        assert!(h.check_free().is_err());
    }
}
