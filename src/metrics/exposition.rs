//! The Prometheus text exposition format (version 0.0.4), rendered from
//! plain values: each family with its `# HELP` and `# TYPE` lines, label
//! values escaped, histograms as cumulative `_bucket{le=…}` series with
//! `_sum` and `_count`, and the labels every series of a file carries (the
//! `database`) added to each sample here, so no family can be without
//! them. Pure: no I/O, no clock.
//!
//! The format is small enough that a library would add more than it saves;
//! what matters is in [`super`] (the names) and [`super::textfile`] (the
//! atomic replace).

use std::fmt::Write as _;

use crate::text_enum::text_enum;

/// A family's `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

text_enum!(Kind "metric type" {
    Counter = "counter",
    Gauge = "gauge",
    Histogram = "histogram",
});

/// A sample's value: integers are written exactly (no detour through f64,
/// so counts and ids never lose digits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i128),
    Float(f64),
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Self::Int(i128::from(n))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Self::Int(i128::from(n))
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Self::Float(x)
    }
}

/// Labels of a sample, in the order written.
pub type Labels = Vec<(&'static str, String)>;

/// One line of a family: the family's name plus `suffix` (`_bucket`,
/// `_sum`, `_count` for histograms, else empty), labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub suffix: &'static str,
    pub labels: Labels,
    pub value: Value,
}

impl Sample {
    pub fn new(labels: Labels, value: impl Into<Value>) -> Self {
        Self {
            suffix: "",
            labels,
            value: value.into(),
        }
    }
}

/// A metric family: one name, one help text, one type, its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// Renders families, every sample with the labels `common` first (a label
/// with an empty value is left out: Prometheus treats it as absent); a
/// family without samples is left out.
pub fn render(families: &[Family], common: &Labels) -> String {
    let mut out = String::new();
    let common: Vec<&(&str, String)> = common.iter().filter(|(_, v)| !v.is_empty()).collect();
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
        for sample in &family.samples {
            out.push_str(family.name);
            out.push_str(sample.suffix);
            let labels: Vec<&(&str, String)> =
                common.iter().copied().chain(&sample.labels).collect();
            if !labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in labels.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&format_value(sample.value));
            out.push('\n');
        }
    }
    out
}

/// `\` and line feeds escaped, as the format requires in help text.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `\`, `"` and line feeds escaped, as the format requires in label values.
fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A value as Prometheus parses it (Go's `ParseFloat` spellings).
pub fn format_value(value: Value) -> String {
    match value {
        Value::Int(n) => n.to_string(),
        Value::Float(x) if x.is_nan() => "NaN".to_owned(),
        Value::Float(x) if x == f64::INFINITY => "+Inf".to_owned(),
        Value::Float(x) if x == f64::NEG_INFINITY => "-Inf".to_owned(),
        // Rust's shortest round-trip form, which Go parses back exactly.
        Value::Float(x) => x.to_string(),
    }
}

/// A histogram with fixed upper bounds (seconds, say), kept as counts per
/// bucket and rendered cumulatively with the `+Inf` bucket last.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds`:
    /// the last is above every bound.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    /// `bounds` ascending.
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `_bucket`, `_sum` and `_count` samples, each with `labels` (and
    /// `le` for the buckets).
    pub fn samples(&self, labels: &Labels) -> Vec<Sample> {
        let mut samples = Vec::with_capacity(self.counts.len() + 2);
        let mut cumulative = 0;
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        for (bound, n) in bounds.zip(&self.counts) {
            cumulative += n;
            let mut with_le = labels.clone();
            with_le.push(("le", format_value(Value::Float(bound))));
            samples.push(Sample {
                suffix: "_bucket",
                labels: with_le,
                value: cumulative.into(),
            });
        }
        samples.push(Sample {
            suffix: "_sum",
            labels: labels.clone(),
            value: self.sum.into(),
        });
        samples.push(Sample {
            suffix: "_count",
            labels: labels.clone(),
            value: cumulative.into(),
        });
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_has_help_type_and_escaped_labels() {
        let text = render(
            &[Family {
                name: "x_total",
                help: "Things \\ counted\nhere.",
                kind: Kind::Counter,
                samples: vec![
                    Sample::new(vec![("reason", "a\"b\\c\nd".to_owned())], 3_u64),
                    Sample::new(
                        vec![("reason", "plain".to_owned()), ("mode", "run".to_owned())],
                        0_u64,
                    ),
                ],
            }],
            &vec![],
        );
        assert_eq!(
            text,
            "# HELP x_total Things \\\\ counted\\nhere.\n\
             # TYPE x_total counter\n\
             x_total{reason=\"a\\\"b\\\\c\\nd\"} 3\n\
             x_total{reason=\"plain\",mode=\"run\"} 0\n"
        );
    }

    #[test]
    fn empty_families_are_left_out_and_unlabelled_samples_have_no_braces() {
        let families = [
            Family {
                name: "a",
                help: "A.",
                kind: Kind::Gauge,
                samples: vec![],
            },
            Family {
                name: "b",
                help: "B.",
                kind: Kind::Gauge,
                samples: vec![Sample::new(vec![], -7_i64)],
            },
        ];
        let text = render(&families, &vec![]);
        assert_eq!(text, "# HELP b B.\n# TYPE b gauge\nb -7\n");
        // A common label with an empty value is absent, as Prometheus
        // reads it.
        assert_eq!(render(&families, &vec![("database", String::new())]), text);
    }

    #[test]
    fn common_labels_come_first_on_every_sample_of_every_family() {
        static BOUNDS: [f64; 1] = [1.0];
        let mut h = Histogram::new(&BOUNDS);
        h.observe(0.5);
        let text = render(
            &[
                Family {
                    name: "a",
                    help: "A.",
                    kind: Kind::Gauge,
                    samples: vec![Sample::new(vec![], 1_u64)],
                },
                Family {
                    name: "h_seconds",
                    help: "H.",
                    kind: Kind::Histogram,
                    samples: h.samples(&vec![("mode", "run".to_owned())]),
                },
            ],
            &vec![("database", "db.example:5432/app\"x".to_owned())],
        );
        assert_eq!(
            text,
            "# HELP a A.\n# TYPE a gauge\n\
             a{database=\"db.example:5432/app\\\"x\"} 1\n\
             # HELP h_seconds H.\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{database=\"db.example:5432/app\\\"x\",mode=\"run\",le=\"1\"} 1\n\
             h_seconds_bucket{database=\"db.example:5432/app\\\"x\",mode=\"run\",le=\"+Inf\"} 1\n\
             h_seconds_sum{database=\"db.example:5432/app\\\"x\",mode=\"run\"} 0.5\n\
             h_seconds_count{database=\"db.example:5432/app\\\"x\",mode=\"run\"} 1\n"
        );
    }

    #[test]
    fn values_are_written_as_prometheus_parses_them() {
        assert_eq!(format_value(Value::from(u64::MAX)), "18446744073709551615");
        assert_eq!(format_value(Value::from(1.0)), "1");
        assert_eq!(format_value(Value::from(0.25)), "0.25");
        assert_eq!(
            format_value(Value::from(1_700_000_000.123)),
            "1700000000.123"
        );
        assert_eq!(format_value(Value::from(f64::INFINITY)), "+Inf");
        assert_eq!(format_value(Value::from(f64::NEG_INFINITY)), "-Inf");
        assert_eq!(format_value(Value::from(f64::NAN)), "NaN");
    }

    #[test]
    fn a_histogram_is_cumulative_with_sum_and_count() {
        static BOUNDS: [f64; 3] = [0.125, 0.5, 1.0];
        let mut h = Histogram::new(&BOUNDS);
        // Binary fractions, so the sum is exact.
        for v in [0.0625, 0.125, 0.25, 2.0] {
            h.observe(v);
        }
        assert_eq!(h.count(), 4);
        let text = render(
            &[Family {
                name: "d_seconds",
                help: "D.",
                kind: Kind::Histogram,
                samples: h.samples(&vec![("mode", "run".to_owned())]),
            }],
            &vec![],
        );
        assert_eq!(
            text,
            "# HELP d_seconds D.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{mode=\"run\",le=\"0.125\"} 2\n\
             d_seconds_bucket{mode=\"run\",le=\"0.5\"} 3\n\
             d_seconds_bucket{mode=\"run\",le=\"1\"} 3\n\
             d_seconds_bucket{mode=\"run\",le=\"+Inf\"} 4\n\
             d_seconds_sum{mode=\"run\"} 2.4375\n\
             d_seconds_count{mode=\"run\"} 4\n"
        );
    }
}
