//! Where `--metrics-file` goes: checked with the configuration, before
//! anything connects, and the names of the files written beside it (which
//! `metrics::textfile` writes).

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The directory the file lives in (`.` for a bare file name).
pub fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A sibling of `path` for `purpose`, in the same directory (so a rename
/// onto `path` is atomic: same file system) and hidden from collectors:
/// node_exporter reads only `*.prom` files, and this name starts with a dot
/// and ends otherwise.
pub fn sibling(path: &Path, purpose: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "metrics".into(), |n| n.to_string_lossy());
    directory(path).join(format!(".{name}.{}.{purpose}", std::process::id()))
}

/// Checks `--metrics-file`: a file name in an existing directory that this
/// process may create files in (tried for real: permissions, read-only
/// mounts and ACLs all show), and not a directory itself.
///
/// # Errors
/// Naming the path and what is wrong with it.
pub fn check(path: &Path) -> Result<()> {
    let shown = path.display();
    if path.file_name().is_none() {
        bail!("--metrics-file {shown}: give a file name, e.g. /var/lib/node_exporter/textfile_collector/relink.prom");
    }
    if path.is_dir() {
        bail!("--metrics-file {shown} is a directory: give a file name in it, e.g. {shown}/relink.prom");
    }
    let dir = directory(path);
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!(
            "--metrics-file {shown}: {} is not a directory",
            dir.display()
        ),
        Err(err) if err.kind() == io::ErrorKind::NotFound => bail!(
            "--metrics-file {shown}: the directory {} does not exist (create it, or point node_exporter's --collector.textfile.directory at an existing one)",
            dir.display()
        ),
        Err(err) => bail!("--metrics-file {shown}: cannot use {}: {err}", dir.display()),
    }
    let probe = sibling(path, "probe");
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(file) => {
            drop(file);
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(err) => bail!(
            "--metrics-file {shown}: cannot write in the directory {}: {err}",
            dir.display()
        ),
    }
}

/// A fresh scratch directory for a test.
#[cfg(test)]
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relink-textfile-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_what_is_wrong() {
        let dir = scratch("check");
        assert!(check(&dir.join("relink.prom")).is_ok());
        let missing = check(&dir.join("nope/relink.prom")).expect_err("missing directory");
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        let is_dir = check(&dir).expect_err("a directory");
        assert!(is_dir.to_string().contains("is a directory"), "{is_dir}");
        fs::write(dir.join("file"), "").expect("a file");
        let not_dir = check(&dir.join("file/relink.prom")).expect_err("parent is a file");
        assert!(
            not_dir.to_string().contains("is not a directory"),
            "{not_dir}"
        );
        // The probe is gone again.
        assert_eq!(fs::read_dir(&dir).expect("list").count(), 1);
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
