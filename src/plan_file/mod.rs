//! The plan file of SPEC §15 (format: docs/plan-and-apply.md): what
//! `run --dry-run --plan-out` writes and `run --plan` / `verify --plan`
//! read. JSON lines, gzip when the name ends in `.gz`: a header line, then
//! one record per profile the dry run planned, in its order. The header
//! carries the records' count and the SHA-256 of their bytes, and its own
//! SHA-256, so a truncated or damaged file is found by one streaming pass
//! before anything is written.
//!
//! `record` and the digests (`rows_digest`, `ledger_digest`) are the one
//! copy of what a plan records about a profile: the dry run writes them,
//! the apply and verify recompute them under the lock and compare.

mod digest;
mod read;
mod write;

pub use digest::{ledger_digest, planned_digest, rows_digest, rules_digest, RULES_VERSION};
pub use read::{open, PlanReader, Validated};
pub use write::{header_line, PlanWriter};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::chunk::Planned;
use crate::plan::ExistingLink;
use crate::report;

/// The format's name, the header's `format`.
pub const FORMAT: &str = "relink-plan";
/// The format's version: readers refuse any other.
pub const VERSION: u64 = 3;

/// Where the plan was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// `pg_control_system().system_identifier`: the cluster.
    pub system_identifier: String,
    /// `current_database()`.
    pub name: String,
}

/// Where and when a plan is made or applied: the database, and its clock.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub origin: Origin,
    /// RFC 3339, UTC.
    pub now: String,
    pub now_unix: f64,
}

impl Stamp {
    /// The database `client` is connected to, and its clock now.
    ///
    /// # Errors
    /// On a database error.
    pub async fn of(client: &impl tokio_postgres::GenericClient) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let row = client
            .query_one(
                "SELECT system_identifier::text, current_database()::text,
                        to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                        extract(epoch FROM now())::float8
                   FROM pg_control_system()",
                &[],
            )
            .await
            .context("cannot read the database's system identifier (pg_control_system())")?;
        Ok(Self {
            origin: Origin {
                system_identifier: row.get(0),
                name: row.get(1),
            },
            now: row.get(2),
            now_unix: row.get(3),
        })
    }
}

/// The header line, less the integrity figures the writer adds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u64,
    pub relink_version: String,
    pub rules_digest: String,
    pub database: Origin,
    pub schema: String,
    pub state_schema: String,
    /// The database's clock when the dry run began, RFC 3339 UTC.
    pub created_at: String,
    /// The same, as Unix seconds: what `--plan-max-age` is measured from.
    pub created_at_unix: f64,
    /// The dry run's summary (`run --dry-run --format json`).
    pub summary: Value,
    /// The forecast of SPEC §15 (see `forecast`).
    pub forecast: Value,
    /// Records that follow.
    pub records: u64,
    /// SHA-256 (hex) of the bytes of every record line, line feeds included.
    pub records_sha256: String,
    /// In a gzip plan, the records' gzip member as stored: what the check
    /// before an apply reads (never inflating the records twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_gzip: Option<Stored>,
}

/// Bytes as stored in the file, and their SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub bytes: u64,
    pub sha256: String,
}

/// One profile's record: the `--report` line (ids, links with id, label,
/// type, url, position, duplicates, rejects) plus the fingerprint of the
/// value planned, the digests of the context it was planned against, and
/// the [`planned_digest`] of the plan the line shows.
pub fn record(planned: &Planned<'_>, existing: &[ExistingLink]) -> Value {
    let mut line = report::report_line(planned);
    if let Value::Object(map) = &mut line {
        map.insert(
            "fingerprint".into(),
            json!(hex(&planned.profile.fingerprint)),
        );
        map.insert("rows_digest".into(), json!(rows_digest(existing)));
        map.insert(
            "ledger_digest".into(),
            json!(ledger_digest(planned.profile.ledger.as_ref())),
        );
        map.insert(
            "planned_sha256".into(),
            json!(hex(&planned_digest(&planned.plan))),
        );
    }
    line
}

/// A record as the apply reads it: what it was planned from, and the
/// digest of what it plans (never the links themselves, so a chunk of
/// records weighs little).
#[derive(Debug, Clone)]
pub struct PlanRecord {
    /// Its number in the file, from 1.
    pub index: u64,
    pub profile_id: String,
    pub user_id: String,
    pub fingerprint: Vec<u8>,
    pub rows_digest: String,
    pub ledger_digest: String,
    /// The [`planned_digest`] of the plan the record shows.
    pub planned: [u8; 32],
    /// Bytes of its line: about what applying it holds in memory (the
    /// legacy value read again and the links planned from it), as a live
    /// run weighs a profile by its value.
    pub weight: usize,
}

/// The fields of a record line the apply reads (the links, duplicates and
/// rejects it shows are for people: `planned_sha256` stands for them).
#[derive(Deserialize)]
struct RecordLine {
    profile_id: String,
    user_id: String,
    fingerprint: String,
    rows_digest: String,
    ledger_digest: String,
    planned_sha256: String,
}

impl PlanRecord {
    /// Reads record `index` from its line.
    ///
    /// # Errors
    /// When the line is not a record: not JSON, a field missing or of the
    /// wrong kind.
    pub fn parse(index: u64, bytes: &[u8]) -> anyhow::Result<Self> {
        let line: RecordLine = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("record {index} is not a plan record ({e})"))?;
        let fingerprint = unhex(&line.fingerprint)
            .ok_or_else(|| anyhow::anyhow!("record {index} has a malformed fingerprint"))?;
        let planned = unhex(&line.planned_sha256)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| anyhow::anyhow!("record {index} has a malformed planned_sha256"))?;
        Ok(Self {
            index,
            profile_id: line.profile_id,
            user_id: line.user_id,
            fingerprint,
            rows_digest: line.rows_digest,
            ledger_digest: line.ledger_digest,
            planned,
            weight: bytes.len(),
        })
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let text = text.as_bytes();
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            relink_version: "test".into(),
            rules_digest: rules_digest(),
            database: Origin {
                system_identifier: "1".into(),
                name: "db".into(),
            },
            schema: "public".into(),
            state_schema: "relink".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            // A float that serde_json's default parser reads back 1 ULP off.
            created_at_unix: 1.662_699_052_999_999_9,
            summary: json!({"elapsed_seconds": 1.662_699_052_999_999_9}),
            forecast: json!({"basis": "none"}),
            records: 0,
            records_sha256: String::new(),
            records_gzip: None,
        }
    }

    /// The records of the plan at `path`, after `open`: (index, profile
    /// id, planned) each.
    fn records_of(path: &std::path::Path) -> Result<Vec<(u64, String, [u8; 32])>, String> {
        let plan = open(path).map_err(|e| e.to_string())?;
        let mut reader = PlanReader::new(&plan).map_err(|e| e.to_string())?;
        let mut records = Vec::new();
        while let Some(r) = reader.next_record().map_err(|e| e.to_string())? {
            records.push((r.index, r.profile_id, r.planned));
        }
        Ok(records)
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).expect("gzip");
        gz.finish().expect("gzip")
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Read as _;
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut text)
            .expect("gunzip");
        text
    }

    #[test]
    fn a_plan_round_trips_and_any_damage_is_found() {
        for name in ["p.jsonl", "p.jsonl.gz"] {
            let dir = std::env::temp_dir().join(format!("relink-unit-plan-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("dir");
            let path = dir.join(name);
            let mut w = PlanWriter::create(&path).expect("create");
            for i in 0..3 {
                w.record(&json!({"profile_id": format!("p{i}"), "user_id": "u",
                                 "fingerprint": "00", "rows_digest": "r", "ledger_digest": "none",
                                 "planned_sha256": hex(&[i; 32])}))
                    .expect("record");
            }
            let bytes = w.finish(header()).expect("finish");
            assert_eq!(std::fs::metadata(&path).expect("plan").len(), bytes);
            let plan = open(&path).expect("an intact plan opens");
            assert_eq!(plan.header.records, 3);
            let expected: Vec<_> = (0..3u8)
                .map(|i| (u64::from(i) + 1, format!("p{i}"), [i; 32]))
                .collect();
            assert_eq!(records_of(&path), Ok(expected.clone()), "{name}");
            let whole = std::fs::read(&path).expect("read");
            let stored = plan.header.records_gzip.clone();
            assert_eq!(
                stored.is_some(),
                name.ends_with(".gz"),
                "{name}: records_gzip"
            );

            std::fs::write(&path, &whole[..whole.len() - 5]).expect("truncate");
            assert!(open(&path).is_err(), "{name}: truncated");
            // One byte changed anywhere in a plain plan, or anywhere in a
            // gzip plan's records member (checked as stored), is refused;
            // in a gzip plan's header member, the change is refused or is
            // in gzip's own metadata (time, OS), which carries no content.
            let records_from = stored.as_ref().map_or(0, |s| {
                whole.len() - usize::try_from(s.bytes).expect("small")
            });
            for at in 0..whole.len() {
                let mut changed = whole.clone();
                changed[at] ^= 0x10;
                std::fs::write(&path, &changed).expect("damage");
                match records_of(&path) {
                    Err(_refused) => {}
                    Ok(records) => {
                        assert!(at < records_from, "{name}: byte {at} changed was not found");
                        assert_eq!(
                            records, expected,
                            "{name}: byte {at} changed the content unseen"
                        );
                    }
                }
            }
            if stored.is_some() {
                // Gunzipped, or compressed again as one member, by hand: it
                // is checked line by line, and still applies.
                let text = gunzip(&whole);
                std::fs::write(&path, &text).expect("gunzipped");
                assert_eq!(records_of(&path), Ok(expected.clone()), "gunzipped");
                let again = gzip(&text);
                std::fs::write(&path, &again).expect("gzip again");
                assert_eq!(records_of(&path), Ok(expected.clone()), "compressed again");
                let mut text = text;
                let at = text.len() - 20;
                text[at] ^= 1;
                std::fs::write(&path, gzip(&text)).expect("damaged then compressed");
                assert!(open(&path).is_err(), "damaged, then compressed again");
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_plan_of_another_format_version_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("relink-unit-version-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("old.jsonl");
        let w = PlanWriter::create(&path).expect("create");
        w.finish(Header {
            version: 1,
            ..header()
        })
        .expect("finish");
        let refused = open(&path)
            .expect_err("a version-1 plan is refused")
            .to_string();
        assert!(
            refused.contains("format version 1") && refused.contains("make a new plan"),
            "{refused}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex("0001abff"), Some(bytes.to_vec()));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
