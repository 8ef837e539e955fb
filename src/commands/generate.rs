//! `relink generate` (hidden): fills an empty database that has the app
//! schema with realistic, messy legacy data, deterministically, in a few
//! set-based statements (sql/generate.sql). For the demo, tests and `make bench`.

use anyhow::{bail, Context as _, Result};

use crate::config::{Common, GenerateConfig};
use crate::db::{self, preflight, Session};
use crate::exit::Outcome;

const GENERATE_SQL: &str = include_str!("../../sql/generate.sql");

/// # Errors
/// On a non-empty database or a database error.
pub async fn generate(common: &Common, args: &GenerateConfig) -> Result<Outcome> {
    let session = Session::new("generate", common, None, false);
    let client = db::connect(&common.database, &session).await?;
    preflight::check(&client, &common.names).await?;
    let existing: i64 = client
        .query_one(
            &common.names.sql("SELECT count(*) FROM {app}.profiles"),
            &[],
        )
        .await?
        .get(0);
    if existing > 0 {
        bail!("profiles already holds {existing} rows: generate only fills an empty database");
    }
    let sql = format!("SET search_path TO {};\n{}", common.names.app, GENERATE_SQL)
        .replace("{{PROFILES}}", &args.profiles.to_string())
        .replace("{{SEED}}", &args.seed.to_string());
    let started = std::time::Instant::now();
    client
        .batch_execute(&sql)
        .await
        .context("cannot generate the data")?;
    tracing::info!(
        "generated {} profiles in {:.1} s (seed {})",
        args.profiles,
        started.elapsed().as_secs_f64(),
        args.seed
    );
    Ok(Outcome::Done)
}
