//! Native timing of the archive's two encodings: `cargo run --release -- [rows per claim]`.
use std::time::Instant;

use seam_parquet_cost::{columnar, ndjson, rows};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(500);
    let rows = rows(n, 7);
    let raw: usize = rows.iter().map(|r| r.line().len() + 1).sum();
    let rounds = (200_000 / n).max(3);
    let time = |f: &dyn Fn() -> usize| {
        let bytes = f();
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(f());
        }
        (
            started.elapsed().as_secs_f64() * 1e6 / (rounds * n) as f64,
            bytes,
        )
    };
    println!(
        "rows {n}, NDJSON lines {:.0} B/event raw",
        raw as f64 / n as f64
    );
    let (us, bytes) = time(&|| ndjson(&rows));
    println!(
        "ndjson-gzip {us:.2} us/event {:.0} B/event",
        bytes as f64 / n as f64
    );
    for (name, code) in [
        ("parquet-none", 0),
        ("parquet-snappy", 1),
        ("parquet-gzip", 2),
    ] {
        let (us, bytes) =
            time(&|| columnar::write(&rows, columnar::codec(code)).map_or(0, |b| b.len()));
        println!(
            "{name} {us:.2} us/event {:.0} B/event",
            bytes as f64 / n as f64
        );
    }
}
