//! The one keyset pager (SPEC §6: never OFFSET, never a whole table in
//! memory): pages of rows ordered by a text key, each page starting after
//! the last key of the previous one.
//!
//! Conventions for the page query: the key is the first column and the
//! rows are ordered by it; `$1` is the last key of the previous page (NULL
//! for the first), `$2` the page size, `$3…` the caller's own parameters.
//! The query comes in two texts, first page and next pages, so that the
//! keyset bound is a plain index condition in the server's generic plan
//! (`$1 IS NULL OR key > $1` was planned as a scan of the whole table).

use anyhow::{Context as _, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

/// Which page a query text is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyset {
    First,
    After,
}

impl Keyset {
    /// The page after `after`, or the first.
    pub fn of(after: Option<&str>) -> Self {
        if after.is_some() {
            Self::After
        } else {
            Self::First
        }
    }

    /// The keyset condition on `column`, for a `WHERE` clause.
    pub fn condition(self, column: &str) -> String {
        match self {
            Self::First => "$1::text IS NULL".to_owned(),
            Self::After => format!("{column} > $1"),
        }
    }
}

/// Keyset pages of one query.
#[derive(Debug, Clone)]
pub struct Pager {
    what: &'static str,
    first: String,
    next: String,
    after: Option<String>,
    page_size: i64,
    done: bool,
}

impl Pager {
    /// `sql` gives the page query for each [`Keyset`]; `after` resumes
    /// strictly after that key; `what` names the rows in errors.
    pub fn new(
        what: &'static str,
        sql: impl Fn(Keyset) -> String,
        after: Option<String>,
        page_size: usize,
    ) -> Self {
        Self {
            what,
            first: sql(Keyset::First),
            next: sql(Keyset::After),
            after,
            page_size: i64::try_from(page_size).unwrap_or(i64::MAX),
            done: false,
        }
    }

    /// Rows in the pages that follow.
    pub fn set_page_size(&mut self, page_size: usize) {
        self.page_size = i64::try_from(page_size).unwrap_or(i64::MAX);
    }

    /// Rows per page.
    pub fn page_size(&self) -> usize {
        usize::try_from(self.page_size).unwrap_or(usize::MAX)
    }

    /// The last key returned (where the next page starts).
    pub fn position(&self) -> Option<&str> {
        self.after.as_deref()
    }

    /// The next page; empty when there is no more. `params` are `$3…`.
    ///
    /// # Errors
    /// On a database error; the position does not move, so the same page
    /// can be read again.
    pub async fn next(
        &mut self,
        client: &impl GenericClient,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        if self.done {
            return Ok(Vec::new());
        }
        let sql = if self.after.is_some() {
            &self.next
        } else {
            &self.first
        };
        let mut all: Vec<&(dyn ToSql + Sync)> = vec![&self.after, &self.page_size];
        all.extend_from_slice(params);
        let rows = client
            .query(sql.as_str(), &all)
            .await
            .with_context(|| match &self.after {
                Some(key) => format!("cannot read {} after {key}", self.what),
                None => format!("cannot read the first page of {}", self.what),
            })?;
        if let Some(last) = rows.last() {
            self.after = Some(last.try_get(0).context("the page key is not text")?);
        }
        if rows.len() < usize::try_from(self.page_size).unwrap_or(usize::MAX) {
            self.done = true;
        }
        Ok(rows)
    }
}
