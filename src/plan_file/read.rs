//! Reading a plan: [`open`] checks the whole file in one streaming pass
//! (the header's own digest, then the records: a gzip plan's records member
//! as stored, any other file's record lines against the header's count and
//! digest) before the caller writes anything; [`PlanReader`] then streams
//! its records, a line at a time.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use flate2::bufread::GzDecoder;
use flate2::read::MultiGzDecoder;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::write::{Tally, HEADER_SHA256};
use super::{hex, Header, PlanRecord, FORMAT, VERSION};

/// A plan whose integrity was checked.
#[derive(Debug, Clone)]
pub struct Validated {
    pub path: PathBuf,
    pub header: Header,
    /// The header's digest: the plan's identity (it covers the records'
    /// digest), which a run applying it records, to resume it.
    pub id: String,
}

fn reader(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let mut file =
        File::open(path).with_context(|| format!("cannot open the plan {}", path.display()))?;
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file =
        File::open(path).with_context(|| format!("cannot open the plan {}", path.display()))?;
    Ok(if gzip {
        Box::new(BufReader::with_capacity(
            1 << 16,
            MultiGzDecoder::new(BufReader::new(file)),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, file))
    })
}

fn damaged(path: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "the plan {} is damaged or truncated ({why}); nothing was written: make a new plan with `relink run --dry-run --plan-out FILE`",
        path.display()
    )
}

/// Reads a line (with its line feed); `None` at the end.
fn next_line(input: &mut dyn BufRead, line: &mut Vec<u8>) -> std::io::Result<Option<()>> {
    line.clear();
    Ok((input.read_until(b'\n', line)? > 0).then_some(()))
}

fn parse_header(path: &Path, line: &[u8]) -> Result<(Header, String)> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| damaged(path, format!("its header is not JSON: {e}")))?;
    if value["format"] != FORMAT {
        bail!(
            "{} is not a relink plan (its first line has no \"format\": \"{FORMAT}\")",
            path.display()
        );
    }
    if value["version"] != VERSION {
        bail!(
            "the plan {} has format version {}; this relink reads version {VERSION}: make a new plan with this release",
            path.display(),
            value["version"]
        );
    }
    // The line is `{…},"header_sha256":"<hex>"}`: the digest covers the
    // text before `,"header_sha256"`, closed by `}`, byte for byte.
    let text = std::str::from_utf8(line)
        .map_err(|_| damaged(path, "its header is not UTF-8"))?
        .trim_end_matches('\n');
    let at = text
        .rfind(&format!(",{HEADER_SHA256}"))
        .ok_or_else(|| damaged(path, "its header has no header_sha256"))?;
    let stated = text[at..]
        .strip_prefix(&format!(",{HEADER_SHA256}\""))
        .and_then(|rest| rest.strip_suffix("\"}"))
        .ok_or_else(|| damaged(path, "its header does not end with its header_sha256"))?;
    let signed = format!("{}}}", &text[..at]);
    if hex(&Sha256::digest(signed.as_bytes())) != stated {
        return Err(damaged(path, "its header does not match its header_sha256"));
    }
    let header: Header =
        serde_json::from_str(&signed).map_err(|e| damaged(path, format!("its header: {e}")))?;
    Ok((header, stated.to_owned()))
}

/// Opens the plan at `path` and checks it whole: a plan that is not
/// complete and intact is refused here, naming why.
///
/// A gzip plan as relink writes it is checked as stored: its header member
/// is inflated and checked, then the records' member is hashed without
/// inflating it, against the header's `records_gzip` (a fifth of the bytes,
/// and no inflating: the apply inflates the records once, as it applies
/// them). Any other file, a plan gunzipped or compressed again by hand
/// included, is checked line by line.
///
/// # Errors
/// When the file cannot be read, is not a plan, or is damaged or truncated.
pub fn open(path: &Path) -> Result<Validated> {
    let file =
        File::open(path).with_context(|| format!("cannot open the plan {}", path.display()))?;
    let mut input = BufReader::with_capacity(1 << 16, file);
    let io = |e: std::io::Error| damaged(path, e);
    if input.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]) {
        if let Some(plan) = open_as_stored(path, input)? {
            return Ok(plan);
        }
    }
    open_by_lines(path)
}

/// The check of a gzip plan as relink writes it; `None` when the file is
/// gzip of another make (the header's member holds more than the header,
/// or the header has no `records_gzip`).
fn open_as_stored(path: &Path, input: BufReader<File>) -> Result<Option<Validated>> {
    const HEADER_MAX: usize = 1 << 20;
    let io = |e: std::io::Error| damaged(path, e);
    let mut member = GzDecoder::new(input);
    // The member's text, up to its first line feed and a little beyond.
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !text.contains(&b'\n') {
        let n = member.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
        if text.len() > HEADER_MAX {
            return Err(damaged(path, "its first line is not a header"));
        }
    }
    if text.is_empty() {
        return Err(damaged(path, "it is empty"));
    }
    let end = text
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |at| at + 1);
    let (header, id) = parse_header(path, &text[..end])?;
    let Some(stored) = header.records_gzip.clone() else {
        return Ok(None);
    };
    if end < text.len() || member.read(&mut buf).map_err(io)? != 0 {
        return Ok(None);
    }
    let mut rest = member.into_inner();
    let mut tally = Tally::new(std::io::sink());
    std::io::copy(&mut rest, &mut tally).map_err(io)?;
    if tally.bytes != stored.bytes || hex(&tally.digest.finalize()) != stored.sha256 {
        return Err(damaged(
            path,
            format!(
                "its records' gzip member has {} bytes, or other bytes, than the header's records_gzip ({} bytes)",
                tally.bytes, stored.bytes
            ),
        ));
    }
    Ok(Some(Validated {
        path: path.to_owned(),
        header,
        id,
    }))
}

/// The check of any plan by its lines: each record line's bytes against the
/// header's `records` and `records_sha256` (and gzip's CRC when gzip).
fn open_by_lines(path: &Path) -> Result<Validated> {
    let mut input = reader(path)?;
    let mut line = Vec::new();
    let io = |e: std::io::Error| damaged(path, e);
    if next_line(&mut *input, &mut line).map_err(io)?.is_none() {
        return Err(damaged(path, "it is empty"));
    }
    let (header, id) = parse_header(path, &line)?;
    let mut digest = Sha256::new();
    let mut records = 0u64;
    while next_line(&mut *input, &mut line).map_err(io)?.is_some() {
        if line.last() != Some(&b'\n') {
            return Err(damaged(
                path,
                format!("record {} is cut short", records + 1),
            ));
        }
        digest.update(&line);
        records += 1;
    }
    if records != header.records {
        return Err(damaged(
            path,
            format!("{records} records where its header says {}", header.records),
        ));
    }
    if hex(&digest.finalize()) != header.records_sha256 {
        return Err(damaged(
            path,
            "its records do not match the header's records_sha256",
        ));
    }
    Ok(Validated {
        path: path.to_owned(),
        header,
        id,
    })
}

/// The records of a validated plan, in order.
pub struct PlanReader {
    input: Box<dyn BufRead + Send>,
    line: Vec<u8>,
    index: u64,
    path: PathBuf,
}

impl PlanReader {
    /// Streams the records of `plan`.
    ///
    /// # Errors
    /// When the file cannot be opened again.
    pub fn new(plan: &Validated) -> Result<Self> {
        let mut input = reader(&plan.path)?;
        let mut line = Vec::new();
        next_line(&mut *input, &mut line)?;
        Ok(Self {
            input,
            line,
            index: 0,
            path: plan.path.clone(),
        })
    }

    /// The next record; `None` after the last.
    ///
    /// # Errors
    /// When the file changed since it was checked.
    pub fn next_record(&mut self) -> Result<Option<PlanRecord>> {
        if next_line(&mut *self.input, &mut self.line)?.is_none() {
            return Ok(None);
        }
        self.index += 1;
        PlanRecord::parse(self.index, &self.line)
            .map(Some)
            .map_err(|e| {
                damaged(
                    &self.path,
                    format!("{e}; was the file changed while in use?"),
                )
            })
    }
}
