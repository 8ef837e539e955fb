//! What relink adds to every session it opens on top of the connection
//! string: its name in `pg_stat_activity` and its settings (timeouts, time
//! zone, read-only), sent in the startup packet's `options`, or — where a
//! pooler refuses that parameter — applied with `set_config` after
//! connecting (see [`super::open`]).

/// What relink adds to every session on top of the connection string.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// relink's name for the session in `pg_stat_activity`. As libpq's
    /// `fallback_application_name`: an `application_name` in the
    /// connection string or `PGAPPNAME` wins, since the operator chose it.
    pub application_name: Option<String>,
    /// Server settings (`name`, `value`) sent at startup after the
    /// connection string's `options`, so relink's guards (timeouts) win
    /// over an operator's setting of the same name.
    pub settings: Vec<(String, String)>,
    /// Sessions refuse writes (`default_transaction_read_only=on`). Known
    /// apart from `settings` so that `target_session_attrs=read-write`
    /// still finds the primary for a read-only relink session.
    pub read_only: bool,
}

impl SessionOptions {
    /// The `options` startup parameter: the connection string's, then
    /// relink's settings as `-c name=value`, with spaces and backslashes
    /// escaped as the server's option parser expects.
    pub(super) fn options(&self, base: Option<&str>) -> Option<String> {
        let mut parts: Vec<String> = base.map(str::to_owned).into_iter().collect();
        for (name, value) in &self.settings {
            parts.push(format!(
                "-c {}={}",
                escape_option(name),
                escape_option(value)
            ));
        }
        if self.read_only {
            parts.push("-c default_transaction_read_only=on".to_owned());
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// The name of a setting relink sends at startup, if any: every one
    /// comes in the one `options` parameter, so this one stands for all.
    pub(super) fn a_setting(&self) -> Option<&str> {
        match self.settings.first() {
            Some((name, _)) => Some(name),
            None if self.read_only => Some("default_transaction_read_only"),
            None => None,
        }
    }

    /// The same settings as one `SELECT set_config(…)` statement, for a
    /// session that did not get them at startup.
    pub(super) fn set_config_sql(&self) -> String {
        let mut calls: Vec<String> = self
            .settings
            .iter()
            .map(|(name, value)| {
                format!(
                    "pg_catalog.set_config({}, {}, false)",
                    quote_literal(name),
                    quote_literal(value)
                )
            })
            .collect();
        if self.read_only {
            calls.push(
                "pg_catalog.set_config('default_transaction_read_only', 'on', false)".to_owned(),
            );
        }
        format!("SELECT {}", calls.join(", "))
    }
}

/// An SQL string literal (`'` doubled; the server runs with
/// standard_conforming_strings on, so `\` is no escape).
pub(super) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn escape_option(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\\' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
