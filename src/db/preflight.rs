//! Preflight (SPEC §1, §12): the checks every command makes on its first
//! connection before it reads or writes anything — [`command_start`]: the
//! connection keeps a server session of its own (no transaction-mode
//! pooler), the application's tables and columns exist, row-level security
//! does not hide rows from relink's role, and a command that writes may.

use anyhow::{bail, Context as _, Result};
use tokio_postgres::Client;

use super::pooler::{self, Pooling};
use super::session::Session;
use super::Database;
use crate::config::{quote_ident, Names};

/// What a command does with the database, for [`command_start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: a dry run, `verify`, `status`.
    Read,
    /// Writes relink's state schema or takes its lock (`pause`, `resume`,
    /// `run`, `purge`, `repair`), and needs these privileges on
    /// `profile_links` (`run`: INSERT; `purge`: DELETE; none for `pause`).
    Write { privileges: &'static [&'static str] },
}

/// `run`: inserts links.
pub const RUN: Access = Access::Write {
    privileges: &["INSERT"],
};
/// A live `purge`: deletes links.
pub const PURGE: Access = Access::Write {
    privileges: &["DELETE"],
};
/// A live `repair`: deletes and moves (updates) relink's links.
pub const REPAIR: Access = Access::Write {
    privileges: &["DELETE", "UPDATE"],
};
/// `pause` and `resume`: write relink's state schema only.
pub const CONTROL: Access = Access::Write { privileges: &[] };

/// The checks every command makes at start, on `client` (its first
/// connection; `session` opens the pooler check's second one), in this
/// order and before anything else is read or written:
///
/// 1. not through a transaction-mode pooler (see [`pooler::probe`]): relink
///    needs a server session of its own, and refuses before it prepares a
///    statement, takes a lock or sets anything a pooler could hand on;
/// 2. the application's schema ([`check`]);
/// 3. row-level security does not apply to relink's role on `profiles`
///    and `profile_links` ([`check_row_security`]);
/// 4. for [`Access::Write`], the session accepts writes and the role holds
///    the privileges the command needs on `profile_links`.
///
/// The same checks for reading commands: a dry run or `verify` that saw
/// only some rows would report a plan or a verdict that is not true.
///
/// # Errors
/// Naming the cause and the fix (exit 1).
pub async fn command_start(
    client: &Client,
    db: &Database,
    names: &Names,
    session: &Session,
    access: Access,
) -> Result<()> {
    check_pooler(client, db, session).await?;
    check(client, names).await?;
    check_row_security(client, names).await?;
    if let Access::Write { privileges } = access {
        check_write_permission(client, names, privileges).await?;
    }
    Ok(())
}

/// Step 1 of [`command_start`]: refuses a transaction-mode pooler.
///
/// # Errors
/// [`pooler::TransactionPooler`], or a database error.
pub async fn check_pooler(client: &Client, db: &Database, session: &Session) -> Result<()> {
    let connector = session.connector(db)?;
    let server = db
        .info
        .targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let second = || async {
        let (other, _task) = connector.connect_bare().await.map_err(anyhow::Error::new)?;
        Ok(other)
    };
    match pooler::probe(client, &server, second)
        .await
        .context("cannot check for a connection pooler")?
    {
        Pooling::Session => Ok(()),
        Pooling::Transaction(pooler) => Err(pooler.into()),
    }
}

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

/// Refuses a role that row-level security applies to on `profiles` or
/// `profile_links` (SPEC §1): it would see only the rows the policies show
/// it — a dry run would plan duplicates and colliding positions beside the
/// rows it cannot see, `verify` would vouch for rows it never read — and
/// the server refuses `COPY FROM` into a table under row-level security.
/// The server's own `row_security_active()` decides (superuser,
/// `BYPASSRLS`, or the owner of a table without `FORCE ROW LEVEL
/// SECURITY`: not active); the catalog explains why, for the message.
///
/// # Errors
/// Naming each table, the role and the fix.
pub async fn check_row_security(client: &Client, names: &Names) -> Result<()> {
    let rows = client
        .query(
            "SELECT c.relname::text, c.relforcerowsecurity, pg_catalog.pg_get_userbyid(c.relowner)::text,
                    current_user::text
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname IN ('profiles', 'profile_links')
                AND pg_catalog.row_security_active(c.oid::regclass)
              ORDER BY c.relname",
            &[&names.app_raw],
        )
        .await
        .context("cannot check row-level security on the application's tables")?;
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let role: String = first.get(3);
    let mut tables = Vec::new();
    let mut owners = Vec::new();
    let mut forced = Vec::new();
    for row in &rows {
        let (table, force, owner): (String, bool, String) = (row.get(0), row.get(1), row.get(2));
        let qualified = format!("{}.{table}", names.app_raw);
        if owner == role {
            // Only FORCE makes policies apply to the owner.
            tables.push(format!(
                "{qualified} (the role owns it, but FORCE ROW LEVEL SECURITY applies its policies to the owner too)"
            ));
            forced.push(format!("{}.{}", names.app, quote_ident(&table)));
        } else {
            tables.push(format!(
                "{qualified} (owned by {owner}{})",
                if force {
                    ", with FORCE ROW LEVEL SECURITY"
                } else {
                    ""
                }
            ));
            if !owners.contains(&owner) && !force {
                owners.push(owner);
            }
        }
    }
    let mut fixes = vec![format!(
        "give the role BYPASSRLS (as a superuser: ALTER ROLE {} BYPASSRLS)",
        quote_ident(&role)
    )];
    if !owners.is_empty() {
        fixes.push(format!("run relink as the owner ({})", owners.join(", ")));
    }
    for table in forced {
        fixes.push(format!(
            "ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY for the migration"
        ));
    }
    bail!(
        "row-level security applies to role {role} on {}: relink must see and write every row (policies that hide some of a user's links would make it plan duplicates and colliding positions, and COPY FROM is refused under row-level security), so it stops before reading or writing anything: {}",
        tables.join(" and "),
        fixes.join(", or ")
    );
}

/// Fails early and clearly when the session cannot write or the role lacks
/// a privilege the command needs on `profile_links` (e.g. a read-only
/// role), before any chunk is attempted.
///
/// # Errors
/// Says which privilege is missing, or that the session is read-only.
pub async fn check_write_permission(
    client: &Client,
    names: &Names,
    privileges: &[&str],
) -> Result<()> {
    let table = format!("{}.profile_links", names.app);
    let mut missing = Vec::new();
    for privilege in privileges {
        let ok: bool = client
            .query_one("SELECT has_table_privilege($1, $2)", &[&table, privilege])
            .await
            .context("cannot check privileges on profile_links")?
            .get(0);
        if !ok {
            missing.push(*privilege);
        }
    }
    let read_only: String = client
        .query_one("SELECT current_setting('transaction_read_only')", &[])
        .await?
        .get(0);
    if read_only == "on" {
        bail!("the session is read-only (default_transaction_read_only or a read-only server): this command writes; connect to the primary as a role that may write");
    }
    if !missing.is_empty() {
        bail!(
            "permission denied: this role lacks {} on {}.profile_links, which this command needs (a dry run needs only SELECT): GRANT {} ON {}.profile_links TO the role",
            missing.join(" and "),
            names.app_raw,
            missing.join(", "),
            names.app
        );
    }
    Ok(())
}
