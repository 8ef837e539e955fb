//! The metrics file on disk (checked before anything connects, by
//! `config::metrics_file`): replaced atomically at every write, so a
//! reader (node_exporter's textfile collector, a Pushgateway push, `cat`)
//! sees the previous file or the new one, never part of one.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::Path;

use crate::config::metrics_file::sibling;

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
    use crate::config::metrics_file::scratch;

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
}
