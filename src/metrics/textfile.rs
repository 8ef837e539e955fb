//! The metrics file on disk: checked before anything connects, then
//! replaced atomically at every write, so a reader (node_exporter's textfile
//! collector, a Pushgateway push, `cat`) sees the previous file or the new
//! one, never part of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The directory the file lives in (`.` for a bare file name).
fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A sibling of `path` for `purpose`, in the same directory (so a rename
/// onto `path` is atomic: same file system) and hidden from collectors:
/// node_exporter reads only `*.prom` files, and this name starts with a dot
/// and ends otherwise.
fn sibling(path: &Path, purpose: &str) -> PathBuf {
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

/// Replaces the file at `path` with `text`: writes a temporary file in the
/// same directory, flushes it to disk, then renames it over `path`.
///
/// The flush (`fsync`) costs one disk sync per write, every 10 seconds;
/// without it, a host crash right after the rename can leave an empty file
/// on some file systems, which the collector would report as a broken
/// file rather than the last figures. The directory itself is not synced:
/// after a crash the previous complete file is as good as the new one.
///
/// # Errors
/// When the file cannot be written or renamed (the temporary is removed).
pub fn replace(path: &Path, text: &str) -> io::Result<()> {
    let temporary = sibling(path, "tmp");
    let written = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("relink-textfile-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch directory");
        dir
    }

    #[test]
    fn replace_leaves_the_new_text_and_no_temporary() {
        let dir = scratch("replace");
        let path = dir.join("relink.prom");
        replace(&path, "a 1\n").expect("first write");
        replace(&path, "a 2\n").expect("second write");
        assert_eq!(fs::read_to_string(&path).expect("read"), "a 2\n");
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("relink.prom")]);
        fs::remove_dir_all(&dir).expect("clean up");
    }

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
