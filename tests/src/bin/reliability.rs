//! `wf-reliability`: writes docs/RELIABILITY.md from the rows the fault-injection tests
//! recorded in their last run (`target/tmp/reliability/*.json`).
//!
//! ```sh
//! cargo test -p wf-tests --test integration && cargo run -p wf-tests --bin wf-reliability
//! ```

#![allow(
    clippy::disallowed_methods,
    reason = "the test harness starts the binaries under test and their helpers"
)]

use std::path::PathBuf;

use serde_json::Value;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/tmp/reliability"));
    let mut rows: Vec<Value> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "no rows in {} ({e}): run the integration tests first",
                dir.display()
            )
        })
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            serde_json::from_str(&std::fs::read_to_string(e.path()).expect("row"))
                .expect("row json")
        })
        .collect();
    rows.sort_by_key(|r| r["command"].as_str().unwrap_or("").to_string());
    let cell = |v: &Value| v.as_str().unwrap_or("").replace('|', "\\|");
    let mut out = String::from(
        "# Reliability\n\n\
         Every fault below was injected by a test that drives the real `wf` and `wf-runner` binaries\n\
         (and, for NATS, real `nats-server` processes). The rows are written by those tests and\n\
         collected into this file by `cargo run -p wf-tests --bin wf-reliability` after\n\
         `cargo test -p wf-tests --test integration`. *Recovery* is what the test measured: the time\n\
         to stop the fault (kill, cancel, budget), or to get the work going again after it.\n\n\
         | fault | what wf did | times | lost | recovery | reproduce |\n|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let ms = r["recoveryMs"].as_u64().unwrap_or(0);
        let recovery = if ms >= 1000 {
            format!("{:.1} s", ms as f64 / 1000.0)
        } else {
            format!("{ms} ms")
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | `{}` |\n",
            cell(&r["fault"]),
            cell(&r["action"]),
            r["times"],
            cell(&r["lost"]),
            recovery,
            cell(&r["command"])
        ));
    }
    let path = root.join("docs/RELIABILITY.md");
    std::fs::create_dir_all(path.parent().expect("docs")).expect("docs dir");
    std::fs::write(&path, out).expect("writing docs/RELIABILITY.md");
    println!("wrote {} ({} rows)", path.display(), rows.len());
}
