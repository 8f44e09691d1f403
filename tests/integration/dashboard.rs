//! The dashboard (`wf-runner --http`) in a real headless Chromium driven over the DevTools
//! protocol: an assignment appears live, its running job's events stream in while the agent
//! still works, a blocked assignment is unblocked from the page and the runner goes on. And the
//! server's refusals: a non-loopback address without a token, a WebSocket from another origin.

use std::time::Duration;

use serde_json::json;
use wf_core::model::AssignmentStatus;
use wf_tests::cdp::Browser;
use wf_tests::{free_port, TestEnv};

use crate::{fixture, BINS};

const LONG: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
// Long: one scenario through the three pages, checked at every step.
fn the_dashboard_shows_work_live_and_unblocks_it_in_a_real_browser() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let go = env.work.join("go").display().to_string();
    let script = json!({
        "plan": [{"init": true}, {"text": "dashboard words"}, {"waitFile": go},
                 {"replay": fixture("tool_write.jsonl")}],
        // The first PM asks a question; the one after the human's answer completes.
        "pm": [{"init": true}, {"firstTime": {"marker": env.work.join("asked").display().to_string(),
            "first": ["update-assignment", "--status", "blocked", "--reason", "Which greeting?"],
            "later": ["update-assignment", "--status", "complete"]}}, {"result": "decided"}]
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/");
    env.set_runner_args(0, &["--http", &format!("127.0.0.1:{port}")]);
    env.start_runner();
    let rt = runtime();
    let browser = rt.block_on(Browser::launch()).expect("chromium");
    let page = rt
        .block_on(browser.open(&base))
        .expect("the dashboard loads");
    let wait = |what: &str, js: &str| {
        rt.block_on(page.wait_for(js, LONG))
            .unwrap_or_else(|e| panic!("{what}: {e}\nrunner log:\n{}", env.runner_log()))
    };
    wait("the socket opens", "document.body.dataset.ws === 'open'");

    // An assignment created now appears on the open page.
    let aid = env.create("Greet the world from the dashboard");
    wait(
        "the new assignment appears",
        &format!("document.querySelector('[data-assignment=\"{aid}\"]')"),
    );
    let jid = env
        .wf_ok(&["insert-job", &aid, "--type", "plan", "--context", "plan it"])
        .trim()
        .to_string();
    env.wait_for(&aid, LONG, |d| {
        d.job(&jid)
            .is_some_and(|j| j.status == wf_core::model::JobStatus::Running)
    });
    // The job's page streams its events while the agent still waits for the go.
    rt.block_on(page.eval(&format!("location.hash = '#/j/{jid}'")))
        .unwrap();
    let transcript = format!("document.querySelector('[data-job=\"{jid}\"]')");
    wait(
        "the running job's first words",
        &format!("{transcript} && {transcript}.textContent.includes('dashboard words')"),
    );
    let seen = rt
        .block_on(page.eval(&format!("Number({transcript}.dataset.seq)")))
        .unwrap();
    assert!(seen.as_u64().unwrap() >= 1, "{seen}");
    std::fs::write(env.work.join("go"), "").unwrap();
    wait(
        "the tool call and the end stream in",
        &format!("{transcript}.textContent.includes('Write') && Number({transcript}.dataset.seq) > {seen}"),
    );

    // The PM blocks with a question; the human answers from the assignment page.
    env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Blocked);
    rt.block_on(page.eval(&format!("location.hash = '#/a/{aid}'")))
        .unwrap();
    wait(
        "the page shows the block",
        "document.querySelector('#assignment-status')?.textContent.trim() === 'blocked' && document.querySelector('#unblock')",
    );
    rt.block_on(page.eval(
        "document.querySelector('#unblock-note').value = 'Say hello, briefly'; \
         document.querySelector('#unblock').click(); true",
    ))
    .unwrap();
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Complete && d.lease.is_none()
    });
    assert!(
        doc.notes
            .iter()
            .any(|n| n.text.contains("Say hello, briefly")),
        "{:?}",
        doc.notes
    );
    wait(
        "the page shows the completion",
        "document.querySelector('#assignment-status')?.textContent.trim() === 'complete'",
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    rt.block_on(page.screenshot(&shot)).expect("a screenshot");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    let errors = rt.block_on(page.console_errors());
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");

    // The runner's metrics count what it ran: the plan and two PMs, once each.
    let metrics = get(port, "/metrics");
    assert!(
        metrics.starts_with("HTTP/1.1 200") && metrics.contains("text/plain; version=0.0.4"),
        "{metrics}"
    );
    for want in [
        "wf_jobs_running{runner=",
        "type=\"plan\",harness=\"claude\",outcome=\"complete\"} 1",
        "type=\"pm\",harness=\"claude\",outcome=\"complete\"} 2",
        "wf_job_duration_seconds_count{runner=",
        "wf_spawn_seconds_bucket{",
        "wf_fleet_assignments_blocked 0",
    ] {
        assert!(metrics.contains(want), "no {want:?} in:\n{metrics}");
    }
    let spawns = metrics
        .lines()
        .find(|l| l.starts_with("wf_spawn_seconds_count"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap();
    assert_eq!(spawns, "3", "{metrics}");
    assert!(metrics.ends_with('\n'));
}

/// A plain HTTP/1.1 GET to the dashboard; the whole answer.
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_foreign_origin_and_a_tokenless_public_address_are_refused() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let port = free_port();
    env.set_runner_args(0, &["--http", &format!("127.0.0.1:{port}")]);
    env.start_runner();
    let rt = runtime();
    let handshake = |origin: &str| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://127.0.0.1:{port}/ws")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        rt.block_on(tokio_tungstenite::connect_async(request))
    };
    match handshake("https://evil.example") {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let log = env.runner_log();
            assert!(
                log.contains("dashboard WebSocket refused") && log.contains("evil.example"),
                "{log}"
            );
        }
        other => panic!("a foreign origin was not refused: {:?}", other.map(|_| ())),
    }
    assert!(
        handshake(&format!("http://127.0.0.1:{port}")).is_ok(),
        "the page's own origin is refused"
    );
    env.signal_runner(libc::SIGTERM);
    env.wait_runner(LONG);

    // Any address but loopback needs a token; the runner refuses to start (and binds nothing).
    let out = std::process::Command::new(BINS.runner.clone())
        .args(["--http", "0.0.0.0:1"])
        .current_dir(&env.root)
        .env_remove("WF_HTTP_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without a token") && stderr.contains("WF_HTTP_TOKEN"),
        "{stderr}"
    );
}
