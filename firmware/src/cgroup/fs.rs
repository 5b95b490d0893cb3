//! The only place that touches cgroup files: every write and read goes through here, so every
//! error names the path (and, for writes, the value).

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::CgroupError;

/// Writes `value` to an existing control file in a single `write(2)`, as the kernel expects.
/// The file is never created: a missing file means the controller is missing, which must be
/// an error rather than a stray regular file.
pub fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    file.write_all(value.as_bytes()).map_err(err)
}

/// Reads a whole control or proc file.
pub fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file holding one unsigned number.
pub fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    parse_u64(path, text.trim())
}

/// Reads the value of `key` from a flat-keyed file (`cpu.stat`, `memory.events`,
/// `memory.oom_control`, `pids.events`): lines of `key value`. `None` if the key is absent.
pub fn read_keyed(path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    let text = read(path)?;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() == Some(key) {
            let value = parts.next().unwrap_or("");
            return parse_u64(path, value).map(Some);
        }
    }
    Ok(None)
}

/// Like [`read_keyed`], but `None` when the file itself does not exist (older kernels).
pub fn read_keyed_if_present(path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    if path.exists() {
        read_keyed(path, key)
    } else {
        Ok(None)
    }
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text.to_owned(),
        expected: "an unsigned integer",
    })
}

/// `mkdir`, where an existing directory is fine (ensure is idempotent).
pub fn create_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(source) => Err(CgroupError::CreateDir {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Removes a cgroup directory and the cgroups below it, deepest first. cgroupfs only allows
/// `rmdir` (its control files go with the directory); on a plain directory (tests) the files
/// are removed first. A missing directory is fine (remove is idempotent); a cgroup that still
/// holds processes fails with EBUSY, naming it.
pub fn remove_tree(path: &Path) -> Result<(), CgroupError> {
    if !path.exists() {
        return Ok(());
    }
    for child in subdirs(path)? {
        remove_tree(&child)?;
    }
    match fs::remove_dir(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() != ErrorKind::DirectoryNotEmpty => {
            return Err(CgroupError::RemoveDir {
                path: path.to_path_buf(),
                source: e,
            })
        }
        Err(_) => {}
    }
    // Not cgroupfs: a directory of ordinary files laid out like one.
    fs::remove_dir_all(path).map_err(|source| CgroupError::RemoveDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a kernel CPU list (`cpuset.cpus`, `cpuset.cpus.effective`).
pub fn read_cpu_list(path: &Path) -> Result<Vec<u32>, CgroupError> {
    let text = read(path)?;
    super::limits::parse_cpu_list(&text).ok_or_else(|| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text.trim().to_owned(),
        expected: "a CPU list such as 0-3,8",
    })
}

/// `path` and every cgroup below it, parents before their children.
pub fn tree(path: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = vec![path.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let below = subdirs(&out[i])?;
        out.extend(below);
        i += 1;
    }
    Ok(out)
}

/// The cgroups directly below `path`.
pub fn subdirs(path: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let read_err = |source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut dirs = Vec::new();
    for entry in fs::read_dir(path).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        if entry.file_type().map_err(read_err)?.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The pids in `dir/cgroup.procs` and in every cgroup below `dir`.
/// Every pid in the trees under `dirs` (each pid once, sorted): what `CgroupManager::procs`
/// returns on every hierarchy.
pub fn procs_under<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Result<Vec<u32>, CgroupError> {
    let mut pids = Vec::new();
    for dir in dirs {
        procs_recursive(dir, &mut pids)?;
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

fn procs_recursive(dir: &Path, out: &mut Vec<u32>) -> Result<(), CgroupError> {
    if !dir.exists() {
        return Ok(());
    }
    let path = dir.join("cgroup.procs");
    for line in read(&path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        out.push(line.parse().map_err(|_| CgroupError::Parse {
            path: path.clone(),
            content: line.to_owned(),
            expected: "one pid per line",
        })?);
    }
    for child in subdirs(dir)? {
        procs_recursive(&child, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_content_and_never_creates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pids.max");
        fs::write(&file, "max\n").unwrap();
        write(&file, "20").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "20");

        let missing = dir.path().join("memory.max");
        let err = write(&missing, "1024").unwrap_err();
        assert!(!missing.exists());
        let text = err.to_string();
        assert!(text.contains(&missing.display().to_string()), "{text}");
        assert!(text.contains("\"1024\""), "{text}");
    }

    #[test]
    fn write_error_names_path_and_value() {
        // Root may write read-only files, so make the write fail another way: a directory
        // where the control file should be.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu.max");
        fs::create_dir(&path).unwrap();
        match write(&path, "20000 100000").unwrap_err() {
            CgroupError::Write {
                path: p,
                value,
                source,
            } => {
                assert_eq!(p, path);
                assert_eq!(value, "20000 100000");
                assert_eq!(source.kind(), ErrorKind::IsADirectory);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn keyed_and_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("cpu.stat");
        fs::write(&stat, "usage_usec 1234\nuser_usec 1000\n").unwrap();
        assert_eq!(read_keyed(&stat, "usage_usec").unwrap(), Some(1234));
        assert_eq!(read_keyed(&stat, "nope").unwrap(), None);
        assert_eq!(
            read_keyed_if_present(&dir.path().join("absent"), "x").unwrap(),
            None
        );

        let bad = dir.path().join("memory.current");
        fs::write(&bad, "lots\n").unwrap();
        let text = read_u64(&bad).unwrap_err().to_string();
        assert!(
            text.contains("memory.current") && text.contains("\"lots\""),
            "{text}"
        );
    }

    #[test]
    fn remove_tree_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("lattice-n");
        fs::create_dir_all(cg.join("child")).unwrap();
        fs::write(cg.join("cgroup.procs"), "").unwrap();
        remove_tree(&cg).unwrap();
        assert!(!cg.exists());
        remove_tree(&cg).unwrap();
    }
}
