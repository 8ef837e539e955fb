//! Metrics files of several databases in one textfile directory (SPEC
//! §14), read by a real node_exporter (`scripts/pg-server node-exporter`:
//! Debian's `prometheus-node-exporter`, textfile collector only): every
//! series carries `database="host:port/dbname"`, so the files of runs and
//! purges against two databases are served side by side, with no gathering
//! error — where the same files without the label collide, as node_exporter
//! reports in its log.

use std::collections::BTreeSet;
use std::path::PathBuf;

use prometheus_parse::{Scrape, Value};

use crate::harness::{assert_success, json_summary, node_exporter, NodeExporter, TestDb};

/// This test's files in the exporter's directory, removed however the test
/// ends: a file left behind would be served by every later scrape.
struct Files(Vec<PathBuf>);

impl Files {
    fn add(&mut self, exporter: &NodeExporter, name: &str) -> PathBuf {
        let path = exporter
            .textfile_dir
            .join(format!("relink-it-{}-{name}.prom", std::process::id()));
        self.0.push(path.clone());
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What node_exporter logged since `from` bytes into its log.
fn log_since(exporter: &NodeExporter, from: u64) -> String {
    let text = std::fs::read(&exporter.log).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[from..]).into_owned()
}

fn log_len(exporter: &NodeExporter) -> u64 {
    std::fs::metadata(&exporter.log).map_or(0, |m| m.len())
}

/// A scrape: 200, no textfile read error; the relink series, parsed.
async fn scraped(exporter: &NodeExporter) -> Scrape {
    let (status, body) = exporter.scrape().await;
    assert!(status.contains(" 200 "), "{status}\n{body}");
    assert!(body.contains("\nnode_textfile_scrape_error 0\n"), "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("the scrape parses")
}

/// The value of `name` with exactly these labels among `scrape`'s samples.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                && s.labels.iter().count() == labels.len()
        })
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// `host:port/dbname` of a test database, as relink labels its series.
fn label(db: &TestDb) -> String {
    let url = url::Url::parse(&db.url).expect("url");
    format!(
        "{}:{}/{}",
        url.host_str().expect("host"),
        url.port().unwrap_or(5432),
        db.name
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_exporter_serves_the_files_of_two_databases_from_one_directory() {
    let exporter = node_exporter();
    let mut files = Files(Vec::new());
    let (a, b) = (TestDb::new("nodex_a").await, TestDb::new("nodex_b").await);
    a.generate(150);
    b.generate(80);

    let mut created = Vec::new();
    for db in [&a, &b] {
        let file = files.add(exporter, &format!("{}-run", db.name));
        let out = db.run(&[
            "run",
            "--format",
            "json",
            "--metrics-file",
            file.to_str().expect("path"),
        ]);
        assert_success(&out);
        created.push(json_summary(&out)["links_created"].as_f64().expect("links"));
    }
    let file = files.add(exporter, &format!("{}-purge", a.name));
    let out = a.run(&[
        "purge",
        "--yes",
        "--format",
        "json",
        "--metrics-file",
        file.to_str().expect("path"),
    ]);
    assert_success(&out);
    let deleted = json_summary(&out)["links_deleted"]
        .as_f64()
        .expect("deleted");

    let before = log_len(exporter);
    let scrape = scraped(exporter).await;
    let log = log_since(exporter, before);
    assert!(
        !log.contains("error gathering metrics") && !log.contains("collected before"),
        "node_exporter: {log}"
    );
    // Both databases' series, each with its own figures.
    for (db, links) in [(&a, created[0]), (&b, created[1])] {
        let database = label(db);
        assert_eq!(
            value(
                &scrape,
                "relink_links_created_total",
                &[("database", &database), ("mode", "run")]
            ),
            Some(links),
            "{database}"
        );
        assert_eq!(
            value(
                &scrape,
                "relink_run_status",
                &[
                    ("database", &database),
                    ("mode", "run"),
                    ("status", "completed")
                ]
            ),
            Some(1.0),
            "{database}"
        );
    }
    assert_eq!(
        value(
            &scrape,
            "relink_links_deleted_total",
            &[("database", &label(&a)), ("mode", "purge")]
        ),
        Some(deleted)
    );
    // Every relink series carries a database label, and never a user.
    let databases: BTreeSet<String> = scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("relink_"))
        .filter(|s| {
            s.labels
                .get("database")
                .is_some_and(|d| d == label(&a) || d == label(&b))
        })
        .map(|s| s.labels.get("database").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(databases.len(), 2, "{databases:?}");
    for text in files
        .0
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
    {
        for line in text.lines().filter(|l| l.starts_with("relink_")) {
            assert!(line.contains("database=\""), "{line}");
            assert!(!line.contains("postgres@"), "{line}");
        }
    }

    // The control: the same two run files without the label collide —
    // what node_exporter did with relink's files before they had one.
    let unlabelled = |db: &TestDb| {
        let text = std::fs::read_to_string(&files.0[if db.name == a.name { 0 } else { 1 }])
            .expect("the run's file");
        text.replace(&format!("database=\"{}\",", label(db)), "")
    };
    let (text_a, text_b) = (unlabelled(&a), unlabelled(&b));
    let (path_a, path_b) = (
        files.add(exporter, "unlabelled-a"),
        files.add(exporter, "unlabelled-b"),
    );
    std::fs::write(&path_a, text_a).expect("write");
    std::fs::write(&path_b, text_b).expect("write");
    let before = log_len(exporter);
    scraped(exporter).await;
    let collided = {
        let started = std::time::Instant::now();
        loop {
            let log = log_since(exporter, before);
            if log.contains("was collected before with the same name and label values") {
                break true;
            }
            if started.elapsed() > std::time::Duration::from_secs(10) {
                break false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    assert!(
        collided,
        "no collision logged: {}",
        log_since(exporter, before)
    );
}
