//! `relink pause` / `relink resume` (SPEC §13): record or lift a pause in the
//! state schema, and return at once. Every `run` and `purge` using that
//! state schema checks it before each chunk (see `throttle`), so no lock is
//! needed here: a pause is a row, and the holds follow it.

use anyhow::Result;

use super::Context;
use crate::db::{self, preflight, Owner, Session};
use crate::exit::Outcome;
use crate::state;

/// `relink pause [--reason TEXT]`.
///
/// # Errors
/// When the state schema cannot be created or written.
pub async fn pause(cx: &Context, reason: Option<&str>) -> Result<Outcome> {
    let names = &cx.common.names;
    let session = Session::new("pause", &cx.common, None, false);
    let mut client = db::connect(&cx.database, &session).await?;
    preflight::command_start(&client, &cx.database, names, &session, preflight::CONTROL).await?;
    // A pause may come before the first run (e.g. to hold cron): it creates
    // the state schema, or upgrades it, as a run would.
    state::ensure_schema(&mut client, names).await?;
    let who = who(&client).await;
    let (pause, new) = state::pause(&client, names, &who, reason).await?;
    let why = pause
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    if new {
        println!(
            "Paused: every relink run and purge on {} (state schema {:?}) finishes its chunk in flight and waits, holding its lock and checkpoint; new ones wait before their first chunk. `relink resume` lifts it.",
            cx.database, names.state_raw
        );
    } else {
        println!(
            "Already paused by {} since {}{why}; nothing changed. `relink resume` lifts it.",
            pause.paused_by, pause.paused_at
        );
    }
    Ok(Outcome::Done)
}

/// `relink resume`.
///
/// # Errors
/// When the state schema cannot be written.
pub async fn resume(cx: &Context) -> Result<Outcome> {
    let names = &cx.common.names;
    let session = Session::new("resume", &cx.common, None, false);
    let client = db::connect(&cx.database, &session).await?;
    preflight::command_start(&client, &cx.database, names, &session, preflight::CONTROL).await?;
    if state::current_pause(&client, names).await?.is_none() {
        println!("Not paused; nothing to resume.");
        return Ok(Outcome::Done);
    }
    let who = who(&client).await;
    match state::resume(&client, names, &who).await? {
        Some(pause) => println!(
            "Resumed: lifted the pause by {} since {}; held runs and purges carry on within seconds.",
            pause.paused_by, pause.paused_at
        ),
        None => println!("Not paused; nothing to resume."),
    }
    Ok(Outcome::Done)
}

/// Who acts: the OS user and host of this process, and the database role.
async fn who(client: &tokio_postgres::Client) -> String {
    let owner = Owner::current();
    let user = Owner::os_user().unwrap_or_else(|| "unknown".to_owned());
    let role: String = client
        .query_one("SELECT current_user", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|_| "?".to_owned());
    format!("{user}@{} (role {role})", owner.host)
}
