//! Preflight (SPEC §1): before any work, check that the application's tables
//! and columns exist, naming what is missing, and that a live run may write.

use anyhow::{bail, Context as _, Result};
use tokio_postgres::Client;

use crate::config::Names;

/// A column relink needs, with the type it relies on (`None`: any type).
type Column = (&'static str, Option<&'static str>);

/// The tables and columns relink reads or writes.
const REQUIRED: &[(&str, &[Column])] = &[
    ("users", &[("id", None)]),
    (
        "profiles",
        &[
            ("id", None),
            ("userId", None),
            ("socialLinks", Some("jsonb")),
        ],
    ),
    (
        "profile_links",
        &[
            ("id", None),
            ("userId", None),
            ("profileId", None),
            ("label", None),
            ("url", None),
            ("type", None),
            ("position", Some("integer")),
            ("createdAt", Some("timestamp(3) without time zone")),
            ("updatedAt", Some("timestamp(3) without time zone")),
        ],
    ),
];

/// Checks the application's schema.
///
/// # Errors
/// Names every missing table or column (or wrong type) and says what to do.
pub async fn check(client: &Client, names: &Names) -> Result<()> {
    let rows = client
        .query(
            "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
              WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
                AND a.attnum > 0 AND NOT a.attisdropped",
            &[&names.app_raw],
        )
        .await
        .context("cannot read the catalog to check the application's schema")?;
    let found: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut problems = Vec::new();
    for (table, columns) in REQUIRED {
        if !found.iter().any(|(t, _, _)| t == table) {
            problems.push(format!("table {}.{table} does not exist", names.app_raw));
            continue;
        }
        for (column, expected) in *columns {
            match found.iter().find(|(t, c, _)| t == table && c == column) {
                None => problems.push(format!("{table}.{column} does not exist")),
                Some((_, _, actual)) => {
                    if let Some(expected) = expected {
                        if actual != expected {
                            problems
                                .push(format!("{table}.{column} is {actual}, expected {expected}"));
                        }
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "the application's schema in {:?} is not what relink needs: {}: apply the application's schema migrations first (or pass --schema)",
            names.app_raw,
            problems.join("; ")
        );
    }
    Ok(())
}

/// Fails early and clearly when the role cannot write the application's
/// table (e.g. a read-only role), before any chunk is attempted.
///
/// # Errors
/// Says which privilege is missing, or that the session is read-only.
pub async fn check_write_permission(client: &Client, names: &Names) -> Result<()> {
    let table = format!("{}.profile_links", names.app);
    let ok: bool = client
        .query_one("SELECT has_table_privilege($1, 'INSERT')", &[&table])
        .await
        .context("cannot check privileges on profile_links")?
        .get(0);
    let read_only: String = client
        .query_one("SELECT current_setting('transaction_read_only')", &[])
        .await?
        .get(0);
    if !ok || read_only == "on" {
        bail!(
            "permission denied: this role cannot INSERT into {}.profile_links{}; a live run needs INSERT there (a dry run needs only SELECT)",
            names.app_raw,
            if read_only == "on" { " (the session is read-only)" } else { "" }
        );
    }
    Ok(())
}
