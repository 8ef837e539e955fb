//! A HOME and environment of a test's own, for the connection tests
//! (libpq's files and variables): only what a test sets reaches relink.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::process::without_pg_env;

/// A fresh scratch directory for one test (a plan, a report, a metrics
/// file), emptied if an earlier run left it.
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relink-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A directory of the test's own, for `HOME` (`~/.pgpass`,
/// `~/.postgresql/`) and files such as `PGPASSFILE`; removed afterwards
/// unless the test failed.
pub struct Home(PathBuf);

impl Home {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "relink-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary HOME");
        chmod(&dir, 0o700);
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `file` (relative to this directory) with `mode`; returns its
    /// path.
    pub fn write(&self, file: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.0.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a directory");
        }
        std::fs::write(&path, text).expect("write a file");
        chmod(&path, mode);
        path
    }

    /// Copies `from` to `file` with `mode`.
    pub fn copy(&self, from: &str, file: &str, mode: u32) -> PathBuf {
        let text = std::fs::read_to_string(from).unwrap_or_else(|e| panic!("read {from}: {e}"));
        self.write(file, &text, mode)
    }

    /// The relink binary with nothing of the caller's connection settings:
    /// no `DATABASE_URL`, no `PG*` variable, no `RELINK_LOG`; `HOME` here.
    pub fn relink(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relink"));
        without_pg_env(&mut cmd, &["DATABASE_URL", "RELINK_LOG"]);
        cmd.env("HOME", &self.0).stdin(Stdio::null());
        cmd
    }

    /// [`Self::relink`] with `DATABASE_URL` = `url`.
    pub fn relink_url(&self, url: &str) -> Command {
        let mut cmd = self.relink();
        cmd.env("DATABASE_URL", url);
        cmd
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}
