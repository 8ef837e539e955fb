//! `relink verify` (SPEC §9): reconciles the migration, one check per line
//! with its figure. Read-only, streaming (keyset pages, flat memory); the
//! "unaccounted" check re-plans settled profiles with the planning core.

use std::collections::HashSet;
use std::io::Write;

use anyhow::{Context as _, Result};
use serde::Serialize;
use tokio_postgres::Client;

use super::Context;
use crate::chunk;
use crate::cli::OutputFormat;
use crate::config::{Names, VerifyConfig};
use crate::db::preflight::{self, Access};
use crate::db::{self, Keyset, Pager, Session};
use crate::exit::Outcome;
use crate::plan::classify::stored_url_key;
use crate::plan::link_ids;
use crate::shutdown::Shutdown;
use crate::source::{self, Filter, Order, Reader};
use crate::state;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Ok,
    Fail,
    Info,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    value: u64,
    verdict: Verdict,
    /// What the figure means or what to do, when it is not zero.
    note: String,
    /// A few examples, for a failing check.
    examples: Vec<String>,
}

/// How many examples a failing check lists.
const EXAMPLES: usize = 5;

/// # Errors
/// On a database error.
pub async fn verify(cx: &Context, args: &VerifyConfig, shutdown: Shutdown) -> Result<Outcome> {
    let names = &cx.common.names;
    let session = Session::new("verify", &cx.common, None, true);
    let client = db::connect(&cx.database, &session).await?;
    preflight::command_start(&client, &cx.database, names, &session, Access::Read).await?;
    let with_ledger = state::exists(&client, names).await?;
    let page = args.page_size;
    let mut checks = Vec::new();

    let total: i64 = client
        .query_one(&names.sql("SELECT count(*) FROM {app}.profile_links"), &[])
        .await
        .context("cannot count profile links")?
        .get(0);
    checks.push(info("links total", to_u64(total), ""));

    let with_legacy = source::count_with_legacy(&client, names, Order::User, None, None).await?;
    checks.push(info("profiles with legacy links", with_legacy, ""));

    let pending = if with_ledger {
        source::count_pending(&client, names).await?
    } else {
        with_legacy
    };
    checks.push(Check {
        name: "profiles pending",
        value: pending,
        verdict: if args.strict && pending > 0 {
            Verdict::Fail
        } else {
            Verdict::Info
        },
        note: if pending > 0 {
            "new or changed since migrated: `relink run` migrates them".to_owned()
        } else {
            String::new()
        },
        examples: Vec::new(),
    });

    let Some(dups) = duplicate_keys(&client, names, page, &shutdown).await? else {
        return Ok(Outcome::Interrupted);
    };
    checks.push(Check {
        name: "duplicate (userId, comparison key) pairs",
        verdict: if dups.0 > 0 { Verdict::Fail } else { Verdict::Ok },
        note: if dups.0 > 0 {
            "a user has two rows for one link (differing only by scheme, www, trailing slash, tracking parameters…)".to_owned()
        } else {
            String::new()
        },
        value: dups.0,
        examples: dups.1,
    });

    let rows = client
        .query(
            &names.sql(
                "SELECT \"userId\", position, count(*) FROM {app}.profile_links
                  GROUP BY \"userId\", position HAVING count(*) > 1 ORDER BY 1, 2",
            ),
            &[],
        )
        .await
        .context("cannot look for duplicate positions")?;
    let users: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    checks.push(Check {
        name: "users with duplicate positions",
        value: users.len() as u64,
        verdict: if users.is_empty() {
            Verdict::Ok
        } else {
            Verdict::Fail
        },
        note: if users.is_empty() {
            String::new()
        } else {
            "two rows of one user share a position".to_owned()
        },
        examples: rows
            .iter()
            .take(EXAMPLES)
            .map(|r| {
                format!(
                    "user {} position {} ×{}",
                    r.get::<_, String>(0),
                    r.get::<_, i32>(1),
                    r.get::<_, i64>(2)
                )
            })
            .collect(),
    });

    if with_ledger {
        let Some(missing) = missing_links(&client, names, page, &shutdown).await? else {
            return Ok(Outcome::Interrupted);
        };
        checks.push(info(
            "ledger links missing from the table",
            missing,
            "created by relink, deleted by users since; never re-created",
        ));
    }

    let Some(lost) = unaccounted(&client, names, with_ledger, page, &shutdown).await? else {
        return Ok(Outcome::Interrupted);
    };
    checks.push(Check {
        name: "legacy links unaccounted for",
        value: lost.0,
        verdict: if lost.0 > 0 { Verdict::Fail } else { Verdict::Ok },
        note: if lost.0 > 0 {
            "a migrated profile has a legacy link that is neither a row, a duplicate nor a reject: rerun with `relink run --restart` and report a bug".to_owned()
        } else {
            String::new()
        },
        examples: lost.1,
    });

    let failed = checks.iter().any(|c| c.verdict == Verdict::Fail);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.format == OutputFormat::Json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"ok": !failed, "strict": args.strict, "checks": checks}),
        )?;
        writeln!(out)?;
    } else {
        for c in &checks {
            let verdict = match c.verdict {
                Verdict::Ok => "OK",
                Verdict::Fail => "FAIL",
                Verdict::Info => "INFO",
            };
            let note = if c.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", c.note)
            };
            writeln!(out, "{verdict:<5} {:<44} {:>12}{note}", c.name, c.value)?;
            for e in &c.examples {
                writeln!(out, "        e.g. {e}")?;
            }
        }
        writeln!(
            out,
            "{}",
            if failed {
                "verify: FAILED"
            } else {
                "verify: OK"
            }
        )?;
    }
    Ok(if failed {
        Outcome::Invariant
    } else {
        Outcome::Done
    })
}

fn info(name: &'static str, value: u64, note: &str) -> Check {
    Check {
        name,
        value,
        verdict: Verdict::Info,
        note: if value > 0 {
            note.to_owned()
        } else {
            String::new()
        },
        examples: Vec::new(),
    }
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Rows beyond the first with the same (userId, comparison key), over all
/// users with links, a page of users at a time. `None` if interrupted.
async fn duplicate_keys(
    client: &Client,
    names: &Names,
    page: usize,
    shutdown: &Shutdown,
) -> Result<Option<(u64, Vec<String>)>> {
    let mut pages = Pager::new(
        "profile links",
        |keyset: Keyset| {
            names.sql(&format!(
                "SELECT \"userId\", array_agg(url) FROM {{app}}.profile_links
                  WHERE {}
                  GROUP BY \"userId\" ORDER BY \"userId\" LIMIT $2",
                keyset.condition("\"userId\"")
            ))
        },
        None,
        page,
    );
    let (mut count, mut examples) = (0u64, Vec::new());
    loop {
        if shutdown.requested() {
            return Ok(None);
        }
        let rows = pages.next(client, &[]).await?;
        if rows.is_empty() {
            return Ok(Some((count, examples)));
        }
        for row in &rows {
            let user: String = row.get(0);
            let urls: Vec<String> = row.get(1);
            let mut seen = HashSet::new();
            for url in urls {
                let key = stored_url_key(&url);
                if !seen.insert(key.clone()) {
                    count += 1;
                    if examples.len() < EXAMPLES {
                        examples.push(format!("user {user}: {key}"));
                    }
                }
            }
        }
    }
}

/// Links the ledger says relink created whose rows are gone, a page of
/// ledger rows at a time; a link counts when no id it can have (SPEC §5:
/// the current rule's, or the plain v5 id of releases before it) is in the
/// table. `None` if interrupted.
async fn missing_links(
    client: &Client,
    names: &Names,
    page: usize,
    shutdown: &Shutdown,
) -> Result<Option<u64>> {
    // Pages of users; each takes all the ledger rows of its users, so a
    // user's rows split by the LIMIT are not skipped.
    let mut pages = Pager::new(
        "the ledger",
        |keyset: Keyset| {
            names.sql(&format!(
                "SELECT user_id FROM {{state}}.ledger WHERE {} ORDER BY user_id LIMIT $2",
                keyset.condition("user_id")
            ))
        },
        None,
        page,
    );
    let mut missing = 0u64;
    loop {
        if shutdown.requested() {
            return Ok(None);
        }
        let mut users: Vec<String> = pages
            .next(client, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if users.is_empty() {
            return Ok(Some(missing));
        }
        users.dedup();
        let rows = client
            .query(
                &names.sql(
                    "SELECT user_id, profile_id, link_keys FROM {state}.ledger WHERE user_id = ANY($1)",
                ),
                &[&users],
            )
            .await
            .context("cannot read the ledger")?;
        // Each link's ids, the second NULL where it has one only.
        let (mut current, mut earlier) = (Vec::new(), Vec::new());
        for row in &rows {
            let (user, profile): (&str, &str) = (row.get(0), row.get(1));
            for key in row.get::<_, Vec<String>>(2) {
                let mut ids = link_ids(profile, user, &key);
                current.push(ids.next());
                earlier.push(ids.next());
            }
        }
        let n: i64 = client
            .query_one(
                &names.sql(
                    "SELECT count(*) FROM unnest($1::text[], $2::text[]) AS x(id, earlier)
                      WHERE NOT EXISTS (SELECT 1 FROM {app}.profile_links pl
                                         WHERE pl.id = x.id OR pl.id = x.earlier)",
                ),
                &[&current, &earlier],
            )
            .await
            .context("cannot compare the ledger with profile_links")?
            .get(0);
        missing += to_u64(n);
    }
}

/// Settled profiles re-planned against the current rows and the ledger:
/// any link the plan would still create was lost. `None` if interrupted.
async fn unaccounted(
    client: &Client,
    names: &Names,
    with_ledger: bool,
    page: usize,
    shutdown: &Shutdown,
) -> Result<Option<(u64, Vec<String>)>> {
    if !with_ledger {
        // Nothing is settled before the first run: all is pending instead.
        return Ok(Some((0, Vec::new())));
    }
    let mut reader = Reader::new(names, Filter::Settled, Order::User, None, page);
    let (mut count, mut examples) = (0u64, Vec::new());
    loop {
        if shutdown.requested() {
            return Ok(None);
        }
        let profiles = reader.next_page(client).await?;
        if profiles.is_empty() {
            return Ok(Some((count, examples)));
        }
        for planned in chunk::plan_chunk(client, names, &profiles).await? {
            for link in &planned.plan.links {
                count += 1;
                if examples.len() < EXAMPLES {
                    examples.push(format!("profile {}: {}", planned.profile.id, link.url));
                }
            }
        }
    }
}
