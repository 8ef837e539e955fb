//! Writing a plan (`run --dry-run --plan-out FILE`): records are streamed
//! into a temporary file beside FILE as the dry run plans them (never the
//! whole plan in memory); at the end the header, which needs the records'
//! count and digest and the dry run's summary, is written into a second
//! temporary file, the records' bytes are copied after it, and that file
//! is renamed to FILE. A dry run that fails or is interrupted leaves no
//! FILE (and removes its temporary files).
//!
//! With gzip (FILE ends in `.gz`), the header and the records are two gzip
//! members one after the other, which every gzip reader (`zcat`, `gunzip`,
//! flate2's `MultiGzDecoder`) reads as one stream; the records' member is
//! copied as it was compressed, and the header carries its size and
//! SHA-256 as stored ([`Stored`]), so a reader checks it without inflating
//! it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{hex, Header, Stored};

/// Where record lines go: plain or gzip (the compressed bytes counted and
/// hashed as they are written).
enum Body {
    Plain(BufWriter<File>),
    Gzip(Box<GzEncoder<Tally<BufWriter<File>>>>),
}

/// A writer that counts and hashes what passes through it.
pub(super) struct Tally<W> {
    pub inner: W,
    pub bytes: u64,
    pub digest: Sha256,
}

impl<W> Tally<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            bytes: 0,
            digest: Sha256::new(),
        }
    }
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Write for Body {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Gzip(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Gzip(w) => w.flush(),
        }
    }
}

/// A plan being written.
pub struct PlanWriter {
    path: PathBuf,
    body_path: PathBuf,
    body: Option<Body>,
    gzip: bool,
    records: u64,
    digest: Sha256,
    line: Vec<u8>,
}

/// A temporary file's path beside `path`: `.NAME.WHAT-PID`, hidden and
/// in the same directory (so the rename is atomic).
fn beside(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "plan".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

impl PlanWriter {
    /// Starts a plan at `path` (gzip when it ends in `.gz`).
    ///
    /// # Errors
    /// When the temporary file beside `path` cannot be created.
    pub fn create(path: &Path) -> Result<Self> {
        let gzip = path.extension().is_some_and(|e| e == "gz");
        let body_path = beside(path, "records");
        let file = File::create(&body_path).with_context(|| {
            format!(
                "cannot create {} (the plan's temporary file; does the directory exist and is it writable?)",
                body_path.display()
            )
        })?;
        let file = BufWriter::with_capacity(1 << 16, file);
        let body = if gzip {
            Body::Gzip(Box::new(GzEncoder::new(
                Tally::new(file),
                Compression::default(),
            )))
        } else {
            Body::Plain(file)
        };
        Ok(Self {
            path: path.to_owned(),
            body_path,
            body: Some(body),
            gzip,
            records: 0,
            digest: Sha256::new(),
            line: Vec::new(),
        })
    }

    /// Appends one record line.
    ///
    /// # Errors
    /// When the temporary file cannot be written.
    pub fn record(&mut self, record: &Value) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        self.digest.update(&self.line);
        self.records += 1;
        if let Some(body) = self.body.as_mut() {
            body.write_all(&self.line)
                .with_context(|| format!("cannot write {}", self.body_path.display()))?;
        }
        Ok(())
    }

    /// Appends `n` record lines already serialized (each ending in a line
    /// feed).
    ///
    /// # Errors
    /// When the temporary file cannot be written.
    pub fn lines(&mut self, lines: &[u8], n: u64) -> Result<()> {
        self.digest.update(lines);
        self.records += n;
        if let Some(body) = self.body.as_mut() {
            body.write_all(lines)
                .with_context(|| format!("cannot write {}", self.body_path.display()))?;
        }
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Writes the header (with the records' count and digest, and its own
    /// digest) and the records into FILE, atomically. Returns the bytes
    /// FILE holds.
    ///
    /// # Errors
    /// When a file cannot be written or renamed.
    pub fn finish(mut self, mut header: Header) -> Result<u64> {
        let body = self.body.take().context("the plan was finished twice")?;
        let file = match body {
            Body::Plain(w) => w.into_inner().map_err(|e| e.into_error())?,
            Body::Gzip(w) => {
                let tally = w.finish()?;
                header.records_gzip = Some(Stored {
                    bytes: tally.bytes,
                    sha256: hex(&tally.digest.finalize()),
                });
                tally.inner.into_inner().map_err(|e| e.into_error())?
            }
        };
        file.sync_all()?;
        drop(file);
        header.records = self.records;
        header.records_sha256 = hex(&self.digest.clone().finalize());
        let line = header_line(&header)?;

        let tmp = beside(&self.path, "tmp");
        let result = (|| -> Result<u64> {
            let mut out = BufWriter::new(
                File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
            );
            if self.gzip {
                let mut gz = GzEncoder::new(&mut out, Compression::default());
                gz.write_all(&line)?;
                gz.finish()?;
            } else {
                out.write_all(&line)?;
            }
            let mut records = File::open(&self.body_path)?;
            std::io::copy(&mut records, &mut out)?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            let bytes = file.metadata()?.len();
            std::fs::rename(&tmp, &self.path).with_context(|| {
                format!("cannot rename {} to {}", tmp.display(), self.path.display())
            })?;
            Ok(bytes)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let _ = std::fs::remove_file(&self.body_path);
        result.with_context(|| format!("cannot write the plan {}", self.path.display()))
    }
}

impl Drop for PlanWriter {
    /// An unfinished plan leaves nothing behind.
    fn drop(&mut self) {
        if self.body.take().is_some() {
            let _ = std::fs::remove_file(&self.body_path);
        }
    }
}

/// The header's line: the header's compact JSON (fields in the order of
/// [`Header`]) with `header_sha256` added as its last field: the SHA-256
/// of that JSON text as it was before the field was added. The reader
/// checks the bytes as written (never a re-serialization, which would
/// depend on how floats are parsed back).
///
/// # Errors
/// Never in practice (serialization of plain data).
pub fn header_line(header: &Header) -> Result<Vec<u8>> {
    let text = serde_json::to_string(header)?;
    let sha = hex(&Sha256::digest(text.as_bytes()));
    let open = text
        .strip_suffix('}')
        .context("a header is a JSON object")?;
    Ok(format!("{open},{HEADER_SHA256}\"{sha}\"}}\n").into_bytes())
}

/// How the header's own digest begins, at the end of its line.
pub const HEADER_SHA256: &str = "\"header_sha256\":";
