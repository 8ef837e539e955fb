//! `relink generate` (hidden): fills an empty database that has the app
//! schema with realistic, messy legacy data, deterministically, in a few
//! set-based statements (sql/generate.sql). For the demo, tests and `make bench`.

use anyhow::{bail, Context as _, Result};

use super::Context;
use crate::cli::{Ids, Mix};
use crate::config::GenerateConfig;
use crate::db::{self, preflight, Session};
use crate::exit::Outcome;

const GENERATE_SQL: &str = include_str!("../../sql/generate.sql");

/// # Errors
/// On a non-empty database or a database error.
pub async fn generate(cx: &Context, args: &GenerateConfig) -> Result<Outcome> {
    let session = Session::new("generate", &cx.common, None, false);
    let client = db::connect(&cx.database, &session).await?;
    preflight::check(&client, &cx.common.names).await?;
    let existing: i64 = client
        .query_one(
            &cx.common.names.sql("SELECT count(*) FROM {app}.profiles"),
            &[],
        )
        .await?
        .get(0);
    if existing > 0 {
        bail!("profiles already holds {existing} rows: generate only fills an empty database");
    }
    let sql = format!(
        "SET search_path TO {};\n{}",
        cx.common.names.app,
        script(args)
    );
    let started = std::time::Instant::now();
    client
        .batch_execute(&sql)
        .await
        .context("cannot generate the data")?;
    tracing::info!(
        "generated {} profiles in {:.1} s (seed {}, mix {}, ids {})",
        args.profiles,
        started.elapsed().as_secs_f64(),
        args.seed,
        mix_name(args.mix),
        ids_name(args.ids)
    );
    Ok(Outcome::Done)
}

/// sql/generate.sql with its placeholders filled in. `{{MIX}}` and `{{IDS}}`
/// land inside SQL string literals: only the fixed names below, never user
/// text, go there.
fn script(args: &GenerateConfig) -> String {
    GENERATE_SQL
        .replace("{{PROFILES}}", &args.profiles.to_string())
        .replace("{{SEED}}", &args.seed.to_string())
        .replace("{{MIX}}", mix_name(args.mix))
        .replace("{{IDS}}", ids_name(args.ids))
}

fn mix_name(mix: Mix) -> &'static str {
    match mix {
        Mix::Default => "default",
        Mix::Entries => "entries",
    }
}

fn ids_name(ids: Ids) -> &'static str {
    match ids {
        Ids::Ordered => "ordered",
        Ids::Uuid => "uuid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        for (mix, ids) in [(Mix::Default, Ids::Ordered), (Mix::Entries, Ids::Uuid)] {
            let sql = script(&GenerateConfig {
                profiles: 7,
                seed: -0.5,
                mix,
                ids,
            });
            assert!(!sql.contains("{{"), "a placeholder is left");
            assert!(sql.contains(&format!("'{}'", mix_name(mix))));
            assert!(sql.contains(&format!("'{}'", ids_name(ids))));
        }
    }
}
