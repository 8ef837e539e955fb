//! What a chunk of plan records' profiles are now: their ledger entries,
//! their users' rows and their legacy values, read together (one round
//! trip, pipelined) in the apply's chunk transaction after its lock phase,
//! or as they are by `verify --plan`. Profiles are looked up by id, one
//! index probe each: never by merging the plan's order with the table's
//! (ids are text ordered by the database's collation, not byte order).

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use super::judge::CurrentLedger;
use crate::chunk;
use crate::config::Names;
use crate::lock_phase::Locked;
use crate::plan::ExistingLink;
use crate::plan_file::PlanRecord;
use crate::source::{self, LedgerEntry, FINGERPRINT};

/// A chunk's profiles now.
#[derive(Debug, Default)]
pub struct Current {
    /// Ledger entries by profile id (profiles without rows are absent).
    pub ledger: HashMap<String, CurrentLedger>,
    /// The users' rows by user id.
    pub rows: HashMap<String, Vec<ExistingLink>>,
    /// Legacy values' text by profile id.
    pub values: HashMap<String, String>,
}

/// Reads [`Current`] for `records` on `client` (in the caller's
/// transaction). `with_ledger`: the state schema exists.
///
/// # Errors
/// On a database error.
pub async fn read(
    client: &impl GenericClient,
    names: &Names,
    records: &[PlanRecord],
    with_ledger: bool,
) -> Result<Current> {
    let ids: Vec<&str> = records.iter().map(|r| r.profile_id.as_str()).collect();
    let users: Vec<&str> = records.iter().map(|r| r.user_id.as_str()).collect();
    let ledger_sql = names.sql(&format!(
        "SELECT c.id, l.latest_run, l.keys, l.fingerprint
           FROM unnest($1::text[], $2::text[]) AS c(user_id, id)
          CROSS JOIN LATERAL ({}) l
          WHERE l.latest_run IS NOT NULL",
        source::ledger_entry(
            "c.user_id",
            "c.id",
            ",\n(array_agg(l.fingerprint ORDER BY l.run_id DESC))[1] AS fingerprint"
        )
    ));
    let values_sql = names.sql(
        "SELECT c.id, p.legacy
           FROM unnest($1::text[]) AS c(id)
          CROSS JOIN LATERAL (SELECT p.\"socialLinks\"::text AS legacy FROM {app}.profiles p
                               WHERE p.id = c.id AND p.\"socialLinks\" IS NOT NULL OFFSET 0) p",
    );
    let ledger = async {
        if !with_ledger {
            return Ok(Vec::new());
        }
        client
            .query_typed(
                &ledger_sql,
                &[(&users, Type::TEXT_ARRAY), (&ids, Type::TEXT_ARRAY)],
            )
            .await
            .context("cannot read the chunk's ledger entries")
    };
    let values = async {
        client
            .query_typed(&values_sql, &[(&ids, Type::TEXT_ARRAY)])
            .await
            .context("cannot read the chunk's legacy values")
    };
    let (rows, ledger, values) =
        tokio::join!(chunk::rows_of_users(client, names, &users), ledger, values);
    Ok(Current {
        rows: rows?,
        ledger: ledger?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    CurrentLedger {
                        entry: LedgerEntry {
                            latest_run: r.get(1),
                            keys: r.get(2),
                        },
                        fingerprint: r.get(3),
                    },
                )
            })
            .collect(),
        values: values?.iter().map(|r| (r.get(0), r.get(1))).collect(),
    })
}

/// The records' profiles and users as they are, without locking them (for
/// `verify --plan`): the same [`Locked`] the lock phase gives.
///
/// # Errors
/// On a database error.
pub async fn peek(
    client: &impl GenericClient,
    names: &Names,
    records: &[PlanRecord],
) -> Result<Locked> {
    let ids: Vec<&str> = records.iter().map(|r| r.profile_id.as_str()).collect();
    let users: Vec<&str> = records.iter().map(|r| r.user_id.as_str()).collect();
    let profiles = client
        .query_typed(
            &names.sql(&format!(
                "SELECT p.id, p.\"userId\", {FINGERPRINT}
                   FROM unnest($1::text[]) AS c(id)
                  CROSS JOIN LATERAL (SELECT * FROM {{app}}.profiles p WHERE p.id = c.id OFFSET 0) p"
            )),
            &[(&ids, Type::TEXT_ARRAY)],
        )
        .await
        .context("cannot read the plan's profiles")?;
    let found = client
        .query_typed(
            &names.sql(
                "SELECT u.id FROM unnest($1::text[]) AS c(id)
                  CROSS JOIN LATERAL (SELECT u.id FROM {app}.users u WHERE u.id = c.id OFFSET 0) u",
            ),
            &[(&users, Type::TEXT_ARRAY)],
        )
        .await
        .context("cannot read the plan's users")?;
    Ok(Locked::of_rows(&profiles, &found))
}
