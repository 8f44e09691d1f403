//! Delivering notifications: the notices writes recorded in assignments' outboxes
//! (`wf_core::chain::notify`) go to the configured hooks — a webhook (a JSON POST, signed
//! GitHub-style when a secret is set) or a command (`sh -c`, the JSON on stdin, through the
//! process layer).
//!
//! A runner claims a notice by compare-and-swap before sending it, so several runners never
//! send one twice; marks each hook that has it, so a runner taking over after a crash sends
//! only what is missing; and removes it when every hook is done. A webhook request is tried
//! up to three times in a round (10 s each, again only on a lost connection, a timeout, 408,
//! 425, 429 or a 5xx, after what `Retry-After` says or 1 s, then 3 s); a round that leaves a
//! hook failing is tried again later (30 s, 2 min, 10 min, … up to [`MAX_ROUNDS`] rounds).
//! The notice's id travels as the payload's `id` and the `X-Wf-Delivery` header: a receiver
//! drops the one duplicate a crash in the middle of a request can cause.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use wf_core::chain::{self, LeaseView};
use wf_core::clock::now_ms;
use wf_core::config::{HookFormat, HookTarget, HookUrl, NotifyHook, WEBHOOK_TIMEOUT};
use wf_core::harness::{CommandSpec, Ended};
use wf_core::model::{Assignment, Millis, Notice, NotifyEvent};
use wf_store::{Store, UpdateError};

use crate::process::{self, Flow, Limits};

/// How long a claim keeps other runners off a notice; renewed before each hook.
pub const CLAIM_MS: Millis = 60_000;
/// Requests per hook in one round.
const TRIES: u32 = 3;
/// Longest in-round wait that `Retry-After` may ask for; a longer one ends the round.
const MAX_IN_ROUND_WAIT: Duration = Duration::from_secs(10);
/// Waits before the next round, after round n (1-based); the last repeats.
const ROUND_BACKOFF_MS: [Millis; 8] = [
    30_000, 120_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000, 28_800_000,
];
/// Rounds after which a notice is given up (about 16 hours of trying).
pub const MAX_ROUNDS: u32 = ROUND_BACKOFF_MS.len() as u32;

/// The header carrying the body's HMAC-SHA256, as `sha256=<hex>` (GitHub's scheme).
pub const SIGNATURE_HEADER: &str = "X-Wf-Signature-256";

/// The key under which a trigger's `on_complete` is marked done in a notice.
pub const TRIGGER_KEY: &str = "trigger:on_complete";

/// What the triggers of this project do when their assignments complete.
pub struct TriggerActions {
    /// The configuration (the forge).
    pub config: wf_core::config::Config,
    /// By trigger id.
    pub actions: std::collections::BTreeMap<String, wf_core::trigger::RawOnComplete>,
}

/// Where a notice goes.
enum Target<'a> {
    /// A configured hook.
    Hook(&'a NotifyHook),
    /// The `on_complete` of the trigger that made the assignment.
    Trigger,
}

impl Target<'_> {
    fn key(&self) -> &str {
        match self {
            Target::Hook(h) => &h.key,
            Target::Trigger => TRIGGER_KEY,
        }
    }
}

/// What a runner needs to deliver notices.
pub struct Notifier {
    hooks: Vec<NotifyHook>,
    /// The triggers' completion actions, when this runner runs triggers.
    triggers: Option<TriggerActions>,
    http: reqwest::Client,
    store: Store,
    runner_id: String,
    exclusive: bool,
    /// Where command hooks run.
    cwd: std::path::PathBuf,
}

/// How one hook's try went.
#[derive(Debug)]
enum Sent {
    /// The hook has it.
    Delivered,
    /// Worth trying again later (and when, if the receiver said).
    Transient(String, Option<Duration>),
    /// It will never take it (a 4xx, a bad configuration).
    Permanent(String),
}

impl Notifier {
    /// A notifier for `hooks` (and the completion actions of `triggers`), writing with
    /// `store` as `runner_id`.
    pub fn new(
        hooks: Vec<NotifyHook>,
        triggers: Option<TriggerActions>,
        store: Store,
        runner_id: String,
        cwd: std::path::PathBuf,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("wf/", env!("CARGO_PKG_VERSION")))
            .timeout(WEBHOOK_TIMEOUT)
            // A redirected POST turns into a GET; a webhook URL that moved is an error to fix.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            exclusive: store.exclusive(),
            hooks,
            triggers,
            http,
            store,
            runner_id,
            cwd,
        })
    }

    fn view(&self) -> LeaseView<'_> {
        LeaseView {
            now: now_ms(),
            me: &self.runner_id,
            exclusive: self.exclusive,
        }
    }

    /// Where `notice` of `doc` goes: the hooks that want its event, and for a completion of
    /// an assignment a trigger made, the trigger's `on_complete`.
    fn targets(&self, notice: &Notice, doc: &Assignment) -> Vec<Target<'_>> {
        let mut out: Vec<Target<'_>> = self
            .hooks
            .iter()
            .filter(|h| h.on.contains(&notice.event))
            .map(Target::Hook)
            .collect();
        let from_trigger = doc.workflow.as_ref().is_some_and(|w| w.trigger.is_some());
        if notice.event == NotifyEvent::Complete && from_trigger && self.triggers.is_some() {
            out.push(Target::Trigger);
        }
        out
    }

    /// Whether some target wants `notice`.
    fn wants(&self, notice: &Notice, doc: &Assignment) -> bool {
        !self.targets(notice, doc).is_empty()
    }

    /// The notices of `doc` this runner should deliver now.
    pub fn due(&self, doc: &Assignment) -> Vec<String> {
        if doc.outbox.is_empty() {
            return Vec::new();
        }
        chain::deliverable(doc, &self.view())
            .into_iter()
            .filter(|n| self.wants(n, doc))
            .map(|n| n.id.clone())
            .collect()
    }

    /// When a notice of `doc` this runner waits for may become due.
    pub fn next_due(&self, doc: &Assignment) -> Option<Millis> {
        if doc.outbox.iter().any(|n| self.wants(n, doc)) {
            chain::next_notice_at(doc, &self.view())
        } else {
            None
        }
    }

    /// Claims (or renews this runner's claim on) notice `id`; `None` when it is gone or
    /// another runner has it.
    async fn claim(&self, aid: &str, id: &str) -> Option<(Assignment, Notice)> {
        let claimed = self
            .store
            .update(aid, |d| {
                let view = self.view();
                chain::claim_notice(d, id, &view, view.now + CLAIM_MS)
            })
            .await;
        match claimed {
            Ok(got) => Some(got),
            Err(UpdateError::Refused(e)) => {
                tracing::debug!(assignment = %aid, notice = %id, %e, "not delivering");
                None
            }
            Err(UpdateError::Store(e)) => {
                tracing::warn!(assignment = %aid, notice = %id, %e, "cannot claim a notice");
                None
            }
        }
    }

    /// Delivers notice `id` of assignment `aid` to every hook that wants it and does not have
    /// it yet, then removes it or sets its next round. Returns the last document written.
    pub async fn deliver(&self, aid: &str, id: &str) -> Option<Assignment> {
        let (mut doc, mut notice) = self.claim(aid, id).await?;
        let mut failing: Vec<(String, Option<Duration>)> = Vec::new();
        let targets: Vec<Target<'_>> = self
            .targets(&notice, &doc)
            .into_iter()
            .filter(|t| !notice.delivered.iter().any(|k| k == t.key()))
            .collect();
        for (i, hook) in targets.into_iter().enumerate() {
            if i > 0 {
                // Each hook may take its whole round: keep the claim ahead of it.
                (doc, notice) = self.claim(aid, id).await?;
            }
            let sent = match &hook {
                Target::Hook(h) => {
                    let payload = chain::payload(&doc, &notice);
                    self.send(h, &notice, &payload).await
                }
                Target::Trigger => self.trigger_actions(&doc).await,
            };
            let done = match &sent {
                Sent::Delivered => {
                    tracing::info!(assignment = %aid, notice = %id, hook = %hook.key(), "notification delivered");
                    true
                }
                Sent::Permanent(why) => {
                    tracing::error!(assignment = %aid, notice = %id, hook = %hook.key(), %why, "a hook refused a notification for good; not retrying it");
                    true
                }
                Sent::Transient(why, after) => {
                    tracing::warn!(assignment = %aid, notice = %id, hook = %hook.key(), %why, "notification not delivered; will retry");
                    failing.push((why.clone(), *after));
                    false
                }
            };
            if done {
                let marked = self
                    .store
                    .update(aid, |d| {
                        chain::notice_delivered(d, id, hook.key(), &self.runner_id)
                    })
                    .await;
                match marked {
                    Ok((d, ())) => doc = d,
                    Err(e) => {
                        // The claim was lost (or the store is down): whoever has the notice
                        // now sends what is missing, maybe this hook once more, same id.
                        tracing::warn!(assignment = %aid, notice = %id, %e, "cannot record a delivery");
                        return None;
                    }
                }
            }
        }
        let retry_at = next_round(&notice, &failing);
        match self
            .store
            .update(aid, |d| {
                chain::finish_notice(d, id, &self.runner_id, retry_at)
            })
            .await
        {
            Ok((d, ())) => Some(d),
            Err(e) => {
                tracing::warn!(assignment = %aid, notice = %id, %e, "cannot finish a notice; its claim will expire");
                None
            }
        }
    }

    /// A completed assignment's trigger `on_complete`: its forge actions (none: done).
    async fn trigger_actions(&self, doc: &Assignment) -> Sent {
        let (Some(t), Some(trigger)) = (
            &self.triggers,
            doc.workflow.as_ref().and_then(|w| w.trigger.as_ref()),
        ) else {
            return Sent::Delivered;
        };
        let Some(actions) = t.actions.get(&trigger.id) else {
            return Sent::Delivered;
        };
        match crate::publish::on_complete(&t.config, doc, actions).await {
            Ok(()) => Sent::Delivered,
            Err(e) => Sent::Transient(e, None),
        }
    }

    async fn send(&self, hook: &NotifyHook, notice: &Notice, payload: &serde_json::Value) -> Sent {
        match &hook.target {
            HookTarget::Webhook {
                url,
                secret_env,
                format,
                headers,
            } => {
                let url = match url {
                    HookUrl::Literal(u) => u.clone(),
                    HookUrl::Env(var) => match std::env::var(var) {
                        Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
                        _ => {
                            return Sent::Transient(
                                format!(
                                "{var} (the hook's urlEnv) is not set in the runner's environment"
                            ),
                                None,
                            )
                        }
                    },
                };
                let secret = match secret_env {
                    None => None,
                    Some(var) => match std::env::var(var) {
                        Ok(s) if !s.is_empty() => Some(s),
                        // Never send unsigned what the receiver expects signed.
                        _ => {
                            return Sent::Transient(
                                format!("{var} (the hook's secretEnv) is not set in the runner's environment"),
                                None,
                            )
                        }
                    },
                };
                let body = match format {
                    HookFormat::Json => payload.clone(),
                    HookFormat::Slack => serde_json::json!({ "text": payload["text"] }),
                };
                let body = serde_json::to_vec(&body).expect("JSON encodes");
                self.post(&url, &body, secret.as_deref(), headers, notice)
                    .await
            }
            HookTarget::Command { command, timeout } => {
                self.run_command(command, *timeout, notice, payload).await
            }
        }
    }

    /// POSTs `body` up to [`TRIES`] times.
    async fn post(
        &self,
        url: &str,
        body: &[u8],
        secret: Option<&str>,
        headers: &BTreeMap<String, String>,
        notice: &Notice,
    ) -> Sent {
        let mut last = Sent::Transient("not tried".into(), None);
        for attempt in 1..=TRIES {
            let mut request = self
                .http
                .post(url)
                .header("Content-Type", "application/json")
                .header("X-Wf-Event", notice.event.wire_name())
                .header("X-Wf-Delivery", &notice.id);
            if let Some(secret) = secret {
                request = request.header(SIGNATURE_HEADER, signature(secret, body));
            }
            for (name, value) in headers {
                request = request.header(name, value);
            }
            last = match request.body(body.to_vec()).send().await {
                Ok(response) => judge(response.status().as_u16(), retry_after(&response)),
                // A connection refused or reset, a timeout: the receiver may be restarting.
                Err(e) => Sent::Transient(describe(&e), None),
            };
            let wait = match &last {
                Sent::Transient(_, after) if attempt < TRIES => {
                    after.unwrap_or(Duration::from_secs(if attempt == 1 { 1 } else { 3 }))
                }
                _ => return last,
            };
            if wait > MAX_IN_ROUND_WAIT {
                return last;
            }
            tokio::time::sleep(wait).await;
        }
        last
    }

    /// Runs a command hook: `sh -c COMMAND` in the project root, the JSON on stdin; exit 0
    /// delivers. Through the process layer, so it cannot outlive its timeout or the runner.
    async fn run_command(
        &self,
        command: &str,
        timeout: Duration,
        notice: &Notice,
        payload: &serde_json::Value,
    ) -> Sent {
        let mut body = serde_json::to_vec(payload).expect("JSON encodes");
        body.push(b'\n');
        let env: BTreeMap<String, String> = [
            ("WF_RUNNER_ID", self.runner_id.as_str()),
            ("WF_NOTICE_ID", notice.id.as_str()),
            ("WF_NOTIFY_EVENT", notice.event.wire_name()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let marker = [
            ("WF_RUNNER_ID", &self.runner_id),
            ("WF_NOTICE_ID", &notice.id),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        let spec = CommandSpec {
            program: "sh".into(),
            args: vec!["-c".into(), command.to_string()],
            env: BTreeMap::new(),
            cwd: self.cwd.clone(),
            stdin: Some(body),
        };
        let limits = Limits::new(timeout, timeout, Duration::from_secs(2)).with_marker(marker);
        let exit = process::run(
            &spec,
            &env,
            &limits,
            &CancellationToken::new(),
            |_| {},
            |_| Flow::Continue,
        )
        .await;
        match exit {
            Ok(exit) => match exit.ended {
                Ended::Exited { code: Some(0), .. } => Sent::Delivered,
                Ended::TimedOut | Ended::IdleTimedOut => {
                    Sent::Transient(format!("the command ran past {timeout:?}"), None)
                }
                other => Sent::Transient(
                    format!(
                        "the command ended {other:?}: {}",
                        exit.stderr_tail.trim().lines().last().unwrap_or("")
                    ),
                    None,
                ),
            },
            Err(e) => Sent::Transient(e.to_string(), None),
        }
    }
}

/// When notice `notice` is tried again after a round in which the hooks `failing` failed
/// (`None`: every hook has it, or every round failed and it is given up).
fn next_round(notice: &Notice, failing: &[(String, Option<Duration>)]) -> Option<Millis> {
    let rounds = notice.failed_rounds + 1;
    if failing.is_empty() {
        return None;
    }
    if rounds >= MAX_ROUNDS {
        tracing::error!(notice = %notice.id, rounds, last = %failing[0].0, "giving up a notification after every round failed");
        return None;
    }
    let backoff = ROUND_BACKOFF_MS[(rounds as usize - 1).min(ROUND_BACKOFF_MS.len() - 1)];
    let asked = failing
        .iter()
        .filter_map(|(_, a)| *a)
        .max()
        .map_or(0, |d| d.as_millis() as Millis);
    Some(now_ms() + backoff.max(asked))
}

/// What an HTTP status means for a webhook.
fn judge(status: u16, retry_after: Option<Duration>) -> Sent {
    match status {
        200..=299 => Sent::Delivered,
        408 | 425 | 429 | 500..=599 => {
            Sent::Transient(format!("the receiver answered {status}"), retry_after)
        }
        _ => Sent::Permanent(format!("the receiver answered {status}")),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare for webhooks and read as absent).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A transport error without the URL (which may be a secret, like Slack's).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer within 10 s"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_githubs() {
        // GitHub's documented example (docs.github.com, "Validating webhook deliveries").
        assert_eq!(
            signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn statuses_are_retried_only_when_retrying_can_help() {
        assert!(matches!(judge(204, None), Sent::Delivered));
        for s in [408, 425, 429, 500, 502, 503] {
            assert!(matches!(judge(s, None), Sent::Transient(..)), "{s}");
        }
        for s in [301, 400, 401, 404, 410, 422] {
            assert!(matches!(judge(s, None), Sent::Permanent(..)), "{s}");
        }
    }
}
