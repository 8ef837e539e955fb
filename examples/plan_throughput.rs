//! Planning throughput on one core: builds N profiles of messy legacy values
//! (the shapes and mix of `sql/generate.sql`, deterministic), then times the
//! planning core alone over them, parsed and then from their JSON text as
//! the reader hands it over. `make bench-plan` runs it:
//!
//!     cargo run --release --example plan_throughput -- [profiles]
//!
//! Target (issue 3): at least 500,000 legacy values per second, so the
//! worker's cost is the database's, not the planner's.

use std::time::Instant;

use relink::plan::legacy;
use relink::plan::{plan_profile, Context};
use serde_json::{json, Value};

/// A tiny deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn url(rng: &mut Rng) -> Value {
    let n = rng.below(100_000);
    Value::String(match rng.below(20) {
        0 => format!("www.site{n}.com"),
        1 => format!("@handle_{n}"),
        2 => format!("https://www.example-{n}.com/?utm_source=x&id={n}"),
        3 => "not a url".to_owned(),
        4 => format!("http://EXAMPLE-{n}.com/path/"),
        5 => format!("https://bücher-{n}.example/"),
        6 => format!("https://www.imdb.com/name/nm{:07}/", n),
        7 => format!("https://vimeo.com/{n}"),
        _ => format!("https://www.example-{n}.com/about"),
    })
}

fn profile(rng: &mut Rng) -> Value {
    const KEYS: [&str; 10] = [
        "website",
        "imdb",
        "showreel",
        "instagram",
        "twitter",
        "Demo-Reel",
        "IMDB",
        " web ",
        "blog",
        "portfolio",
    ];
    let count = 1 + rng.below(4);
    match rng.below(5) {
        0 | 1 => Value::Object(
            (0..count)
                .map(|_| {
                    (
                        KEYS[usize::try_from(rng.below(10)).unwrap_or(0)].to_owned(),
                        url(rng),
                    )
                })
                .collect(),
        ),
        2 => Value::Array((0..count).map(|_| url(rng)).collect()),
        3 => Value::Array(
            (0..count)
                .map(|_| json!({"label": "My link", "url": url(rng), "type": "website"}))
                .collect(),
        ),
        _ => Value::String(Value::Array((0..count).map(|_| url(rng)).collect()).to_string()),
    }
}

fn main() {
    let profiles: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let data: Vec<(String, Value)> = (0..profiles)
        .map(|i| (format!("p{i:08}"), profile(&mut rng)))
        .collect();
    let values: usize = data
        .iter()
        .map(|(_, v)| {
            legacy::candidates(legacy::decode(v.into()).json())
                .items
                .len()
        })
        .sum();

    let started = Instant::now();
    let mut links = 0usize;
    for (id, social) in &data {
        links += plan_profile(id, id, social, Context::default()).links.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "planned {profiles} profiles, {values} legacy values, {links} links in {secs:.2} s: {:.0} values/s on one core",
        values as f64 / secs
    );

    // The reader's path: each value as the JSON text PostgreSQL hands over,
    // read by the planner itself (`legacy::parse`).
    let texts: Vec<String> = data.iter().map(|(_, v)| v.to_string()).collect();
    let started = Instant::now();
    let mut read = 0usize;
    for ((id, _), text) in data.iter().zip(&texts) {
        read += plan_profile(id, id, &legacy::parse(text), Context::default())
            .links
            .len();
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(read, links, "the text plans like the parsed value");
    println!(
        "from the values' JSON text (the reader's path): {secs:.2} s: {:.0} values/s",
        values as f64 / secs
    );
}
