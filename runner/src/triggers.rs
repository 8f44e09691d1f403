//! The trigger engine every runner runs: cron schedules (croner, IANA zones from chrono-tz),
//! issues becoming ready (GitHub labels and blockers, or `bd ready --json`), and pull requests
//! opened or updated, each instantiating a workflow.
//!
//! Exactly once, with any number of runners and across restarts: a firing's assignment id
//! follows from the trigger and what fired it (`wf_core::trigger::firing_id`), so the store's
//! create-if-absent lets one exist; a cron trigger's state record (its last slot, counters)
//! changes only by compare-and-swap, so the slots due are decided once; a crash between the
//! create and the state write re-decides the same slots and finds the assignments made.
//! [`Engine::tick`] takes the time as an argument: the daemon passes the clock, tests pass
//! the instants they want.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use chrono::TimeZone as _;
use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::forge::GitHub;
use crate::ops::{self, CreateRequest, OpError};
use wf_core::clock::now_ms;
use wf_core::config::Config;
use wf_core::model::{AssignmentStatus, ForgeLink, Millis, PullRequestRef};
use wf_core::trigger::{
    self, CronPlan, ReadySource, SlotAction, Trigger, TriggerKind, TriggerState,
};
use wf_core::workflow::{self, TriggerRef};
use wf_store::{Store, StoreError, UpdateError};

/// Most due slots enumerated at once (a longer downtime counts the rest as missed).
const MAX_ENUMERATED: usize = 1000;

/// A trigger with its parsed schedule.
struct Loaded {
    trigger: Trigger,
    cron: Option<(croner::Cron, chrono_tz::Tz)>,
}

/// Parses a cron expression (5 fields, 6 with seconds, or an alias like `@daily`).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| format!("cron {expr:?}: {e}"))
}

/// Parses an IANA time zone name.
pub fn parse_tz(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name).map_err(|_| {
        format!("tz {name:?} is not an IANA time zone name (like UTC or Europe/Berlin)")
    })
}

/// The triggers of the project (`.wf/triggers.toml` under the project root; none without the
/// file), every cron, zone, workflow and parameter name checked.
pub fn load(config: &Config) -> Result<Vec<Trigger>, String> {
    let path = config.root.join(trigger::TRIGGERS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file = path.display().to_string();
    let triggers = trigger::parse(&text, &file)?;
    for t in &triggers {
        check(t, &config.root).map_err(|e| format!("{file}: trigger `{}`: {e}", t.id))?;
    }
    Ok(triggers)
}

/// What `parse` cannot check: the cron and zone, the workflow and its parameters' names.
fn check(t: &Trigger, root: &Path) -> Result<(), String> {
    if let TriggerKind::Cron { expr, tz, .. } = &t.kind {
        parse_cron(expr)?;
        parse_tz(tz)?;
    }
    let wf = workflow::find(&t.workflow, root).map_err(|e| e.to_string())?;
    for name in t.params.keys() {
        if !wf.params.contains_key(name) {
            return Err(format!(
                "params.{name}: workflow `{}` declares no parameter `{name}`",
                wf.name
            ));
        }
    }
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    for (what, text) in t
        .params
        .iter()
        .map(|(k, v)| (format!("params.{k}"), v))
        .chain(t.north_star.iter().map(|n| ("north_star".to_string(), n)))
    {
        env.template_from_str(text)
            .map_err(|e| format!("{what}: {}", e.detail().unwrap_or(&e.to_string())))?;
    }
    Ok(())
}

/// One trigger's state as `wf triggers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerStatus {
    /// Its id.
    pub id: String,
    /// What makes it fire.
    pub on: String,
    /// The workflow it instantiates.
    pub workflow: String,
    /// Whether it runs.
    pub enabled: bool,
    /// Its stored state.
    pub state: TriggerState,
    /// When it fires (cron) or polls next.
    pub next: Option<Millis>,
}

/// The engine: the project's triggers over a store.
pub struct Engine {
    store: Store,
    config: Config,
    loaded: Vec<Loaded>,
}

impl Engine {
    /// An engine for `triggers` (as [`load`] returns them).
    pub fn new(store: Store, config: Config, triggers: Vec<Trigger>) -> Result<Self, String> {
        let mut loaded = Vec::new();
        for trigger in triggers {
            let cron = match &trigger.kind {
                TriggerKind::Cron { expr, tz, .. } => Some((parse_cron(expr)?, parse_tz(tz)?)),
                _ => None,
            };
            loaded.push(Loaded { trigger, cron });
        }
        Ok(Self {
            store,
            config,
            loaded,
        })
    }

    /// The triggers.
    pub fn triggers(&self) -> impl Iterator<Item = &Trigger> {
        self.loaded.iter().map(|l| &l.trigger)
    }

    /// The first slot of `l`'s schedule after `after`.
    fn next_slot(l: &Loaded, after: Millis) -> Option<Millis> {
        let (cron, tz) = l.cron.as_ref()?;
        let start = chrono::Utc
            .timestamp_millis_opt(after as i64)
            .single()?
            .with_timezone(tz);
        let next = cron.find_next_occurrence(&start, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// Evaluates every enabled trigger at `now`; returns the assignments it created. Errors are
    /// logged and kept in the trigger's state, never fatal.
    pub async fn tick(&self, now: Millis) -> Vec<String> {
        let mut created = Vec::new();
        for l in self.loaded.iter().filter(|l| l.trigger.enabled) {
            let result = match &l.trigger.kind {
                TriggerKind::Cron { .. } => self.tick_cron(l, now).await,
                TriggerKind::IssueReady { .. } | TriggerKind::PullRequest { .. } => {
                    self.tick_poll(l, now).await
                }
            };
            match result {
                Ok(ids) => created.extend(ids),
                Err(e) => {
                    tracing::warn!(trigger = %l.trigger.id, %e, "trigger failed");
                    self.note_error(&l.trigger, now, &e).await;
                }
            }
        }
        created
    }

    async fn note_error(&self, t: &Trigger, now: Millis, error: &str) {
        let key = trigger::state_key(&t.id);
        let noted = self
            .store
            .update_state::<TriggerState, (), Infallible>(&key, |s| {
                let mut s = s.unwrap_or_default();
                s.last_error = Some(error.chars().take(500).collect());
                if t.interval_ms().is_some() {
                    s.last_poll = Some(now);
                }
                Ok((s, ()))
            })
            .await;
        if let Err(e) = noted {
            tracing::warn!(trigger = %t.id, %e, "cannot record the trigger's error");
        }
    }

    /// When the next trigger is due, after `now`.
    pub async fn next_due(&self, now: Millis) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        for l in self.loaded.iter().filter(|l| l.trigger.enabled) {
            let state = self.state(&l.trigger).await.unwrap_or_default();
            let at = match l.trigger.interval_ms() {
                Some(every) => Some(state.last_poll.map_or(now, |p| p + every)),
                None => Self::next_slot(l, state.last_slot.unwrap_or(now).max(now)),
            };
            next = match (next, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        next
    }

    async fn state(&self, t: &Trigger) -> Result<TriggerState, String> {
        self.store
            .state::<TriggerState>(&trigger::state_key(&t.id))
            .await
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string())
    }

    /// What `wf triggers` shows.
    pub async fn status(&self, now: Millis) -> Result<Vec<TriggerStatus>, StoreError> {
        let mut out = Vec::new();
        for l in &self.loaded {
            let state = self
                .store
                .state::<TriggerState>(&trigger::state_key(&l.trigger.id))
                .await?
                .unwrap_or_default();
            let next = match l.trigger.interval_ms() {
                _ if !l.trigger.enabled => None,
                Some(every) => Some(state.last_poll.map_or(now, |p| (p + every).max(now))),
                None => Self::next_slot(l, state.last_slot.unwrap_or(now).max(now)),
            };
            out.push(TriggerStatus {
                id: l.trigger.id.clone(),
                on: l.trigger.describe(),
                workflow: l.trigger.workflow.clone(),
                enabled: l.trigger.enabled,
                state,
                next,
            });
        }
        Ok(out)
    }

    /// The cron slots of `l` after `last` up to `now`: at most [`MAX_ENUMERATED`] (the
    /// newest), and how many older ones were left out.
    fn due_slots(l: &Loaded, last: Millis, now: Millis) -> (Vec<Millis>, u64) {
        let mut due = std::collections::VecDeque::new();
        let mut dropped = 0u64;
        let mut at = last;
        while let Some(slot) = Self::next_slot(l, at) {
            if slot > now {
                break;
            }
            due.push_back(slot);
            if due.len() > MAX_ENUMERATED {
                due.pop_front();
                dropped += 1;
                // A very long downtime: skip ahead rather than walk every slot.
                if dropped > 100_000 {
                    break;
                }
            }
            at = slot;
        }
        (due.into(), dropped)
    }

    /// A cron trigger at `now`: decides the due slots by its policy, creates the assignments
    /// of the slots that fire, then advances its state by compare-and-swap.
    async fn tick_cron(&self, l: &Loaded, now: Millis) -> Result<Vec<String>, String> {
        let t = &l.trigger;
        let TriggerKind::Cron { policy, .. } = &t.kind else {
            return Ok(Vec::new());
        };
        let key = trigger::state_key(&t.id);
        let state = self.state(t).await?;
        let Some(last) = state.last_slot else {
            // First seen: it starts now; nothing before it fires.
            self.store
                .update_state::<TriggerState, (), Infallible>(&key, |s| {
                    let mut s = s.unwrap_or_default();
                    s.last_slot.get_or_insert(now);
                    Ok((s, ()))
                })
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Vec::new());
        };
        let (due, more) = Self::due_slots(l, last, now);
        if due.is_empty() && more == 0 {
            return Ok(Vec::new());
        }
        let running = match &state.last_assignment {
            Some(aid) => self
                .store
                .get(aid)
                .await
                .map_err(|e| e.to_string())?
                .is_some_and(|d| d.status != AssignmentStatus::Complete),
            None => false,
        };
        let plan = trigger::plan_cron(&state, &due, more, now, policy, running);
        let mut fired = Vec::new();
        let mut created = Vec::new();
        for (slot, action) in &plan.slots {
            if *action != SlotAction::Fire {
                continue;
            }
            let event = slot.to_string();
            let id = trigger::firing_id(self.config.namespace.as_str(), &t.id, &event);
            let ev = Event {
                key: event,
                ctx: json!({"trigger": t.id, "slot": slot_context(*slot, l)}),
                number: None,
                forge: None,
                star: None,
            };
            let independent = policy.overlap != trigger::Overlap::Queue;
            if self.fire(t, &id, ev, independent).await? {
                created.push(id.clone());
            }
            fired.push((*slot, id));
        }
        self.advance(&key, &plan, &fired).await?;
        for (slot, action) in &plan.slots {
            match action {
                SlotAction::Fire => tracing::info!(trigger = %t.id, slot, "cron slot fired"),
                SlotAction::Skip => {
                    tracing::info!(trigger = %t.id, slot, "cron slot skipped: the last firing's assignment is not complete")
                }
                SlotAction::Miss => {
                    tracing::warn!(trigger = %t.id, slot, "cron slot missed (downtime beyond the catch-up policy)")
                }
            }
        }
        Ok(created)
    }

    /// Records `plan` in the trigger's state, unless another runner already recorded it.
    async fn advance(
        &self,
        key: &str,
        plan: &CronPlan,
        fired: &[(Millis, String)],
    ) -> Result<(), String> {
        self.store
            .update_state::<TriggerState, (), Infallible>(key, |s| {
                let s = s.unwrap_or_default();
                if s.last_slot.is_some_and(|l| l >= plan.last_slot) {
                    return Ok((s, ()));
                }
                Ok((s.after_cron(plan, fired), ()))
            })
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Creates the assignment `id` of trigger `t` for `event`: the workflow instantiated with
    /// the trigger's parameters rendered over `ctx`. Returns false when it exists already
    /// (another runner, or an earlier tick, made it).
    async fn fire(
        &self,
        t: &Trigger,
        id: &str,
        ev: Event,
        independent: bool,
    ) -> Result<bool, String> {
        let Event {
            key: event,
            ctx,
            forge,
            star: event_star,
            ..
        } = ev;
        let event = event.as_str();
        if self
            .store
            .get(id)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(false);
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let render = |what: &str, text: &str| {
            env.render_str(text, &ctx)
                .map_err(|e| format!("{what}: {}", e.detail().unwrap_or(&e.to_string())))
        };
        let mut params = BTreeMap::new();
        for (k, v) in &t.params {
            params.insert(k.clone(), render(&format!("params.{k}"), v)?);
        }
        let star = match (&t.north_star, event_star) {
            (Some(n), _) => Some(render("north_star", n)?),
            (None, event_star) => event_star,
        };
        let wf = workflow::find(&t.workflow, &self.config.root).map_err(|e| e.to_string())?;
        let star = match (star, &wf.north_star) {
            (Some(s), _) => Some(s),
            (None, Some(_)) => None,
            (None, None) => Some(format!(
                "Run workflow `{}` (trigger `{}`, {event})",
                wf.name, t.id
            )),
        };
        let mut plan = workflow::instantiate(&wf, &params, star.as_deref())?;
        plan.workflow.trigger = Some(TriggerRef {
            id: t.id.clone(),
            event: event.to_string(),
        });
        let forge = match forge {
            Some(link) => Some(link),
            None => self.forge_of(&plan).await?,
        };
        let req = CreateRequest {
            north_star: plan.north_star.clone(),
            priority: t.priority,
            independent,
            start: None,
            budget: None,
            forge,
            plan: Some(Box::new(plan)),
            id: Some(id.to_string()),
        };
        match ops::create(&self.store, &self.config, &req).await {
            Ok(doc) => {
                tracing::info!(trigger = %t.id, assignment = %doc.id, %event, "trigger fired");
                Ok(true)
            }
            Err(OpError::Store(StoreError::AlreadyExists(_))) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The forge link a workflow's issue or pull request parameter names, read from the forge.
    async fn forge_of(&self, plan: &workflow::Plan) -> Result<Option<ForgeLink>, String> {
        if plan.forge_issue.is_none() && plan.forge_pull_request.is_none() {
            return Ok(None);
        }
        let default_repo = crate::forge::repo_name(&self.config, None).await;
        if let Some(arg) = &plan.forge_issue {
            let (repo, number) = wf_core::forge::parse_issue_arg(arg, default_repo.as_deref())?;
            let client = GitHub::new(&self.config.forge, &repo).map_err(|e| e.to_string())?;
            let (issue, _) = client.issue(number).await.map_err(|e| e.to_string())?;
            return Ok(Some(ForgeLink {
                repo,
                issue: Some(issue),
                pull_request: None,
                progress_comment: None,
            }));
        }
        let arg = plan.forge_pull_request.as_deref().unwrap_or_default();
        let (repo, number) = wf_core::forge::parse_issue_arg(arg, default_repo.as_deref())?;
        Ok(Some(ForgeLink {
            pull_request: Some(PullRequestRef {
                number,
                url: format!("https://github.com/{repo}/pull/{number}"),
                draft: false,
            }),
            repo,
            issue: None,
            progress_comment: None,
        }))
    }

    /// A forge trigger at `now`, when its interval has passed: polls, fires once per event.
    async fn tick_poll(&self, l: &Loaded, now: Millis) -> Result<Vec<String>, String> {
        let t = &l.trigger;
        let every = t.interval_ms().unwrap_or(trigger::DEFAULT_POLL_MS);
        let key = trigger::state_key(&t.id);
        // Claim this poll by moving `last_poll`: several runners poll once per interval.
        let claimed = self
            .store
            .update_state::<TriggerState, (), ()>(&key, |s| {
                let mut s = s.unwrap_or_default();
                if s.last_poll.is_some_and(|p| p + every > now) {
                    return Err(());
                }
                s.last_poll = Some(now);
                Ok((s, ()))
            })
            .await;
        match claimed {
            Ok(_) => {}
            Err(UpdateError::Refused(())) => return Ok(Vec::new()),
            Err(UpdateError::Store(e)) => return Err(e.to_string()),
        }
        let events = match &t.kind {
            TriggerKind::IssueReady {
                source: ReadySource::GitHub { label, repo, .. },
                ..
            } => self.ready_issues(label, repo.as_deref()).await?,
            TriggerKind::IssueReady {
                source: ReadySource::Beads { command },
                ..
            } => self.beads_ready(command).await?,
            TriggerKind::PullRequest {
                repo, base, drafts, ..
            } => {
                self.open_pulls(repo.as_deref(), base.as_deref(), *drafts)
                    .await?
            }
            TriggerKind::Cron { .. } => Vec::new(),
        };
        let mut created = Vec::new();
        for ev in events {
            let id = trigger::firing_id(self.config.namespace.as_str(), &t.id, &ev.key);
            let mut ev = ev;
            ev.ctx["trigger"] = json!(t.id);
            let number = ev.number;
            if self.fire(t, &id, ev, true).await? {
                if let (
                    TriggerKind::IssueReady {
                        source:
                            ReadySource::GitHub {
                                label,
                                claim_label: Some(claim),
                                repo,
                            },
                        ..
                    },
                    Some(n),
                ) = (&t.kind, number)
                {
                    self.swap_label(repo.as_deref(), n, label, claim).await;
                }
                created.push(id);
            }
        }
        let n = created.len() as u64;
        let last = created.last().cloned();
        self.store
            .update_state::<TriggerState, (), Infallible>(&key, |s| {
                let mut s = s.unwrap_or_default();
                s.fired += n;
                s.last_error = None;
                if let Some(a) = &last {
                    s.last_assignment = Some(a.clone());
                    s.last_fired = Some(now);
                }
                Ok((s, ()))
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(created)
    }

    async fn client(&self, repo: Option<&str>) -> Result<GitHub, String> {
        let repo = match repo {
            Some(r) => r.to_string(),
            None => crate::forge::repo_name(&self.config, None)
                .await
                .ok_or("which repository? set forge.repo or the trigger's repo")?,
        };
        GitHub::new(&self.config.forge, &repo).map_err(|e| e.to_string())
    }

    /// The open issues with `label` whose blockers are all closed.
    async fn ready_issues(&self, label: &str, repo: Option<&str>) -> Result<Vec<Event>, String> {
        let client = self.client(repo).await?;
        let mut out = Vec::new();
        for i in client
            .open_issues_labelled(label)
            .await
            .map_err(|e| e.to_string())?
        {
            if !client
                .unblocked(i.issue.number)
                .await
                .map_err(|e| e.to_string())?
            {
                continue;
            }
            let repo = client.repo().to_string();
            let star = wf_core::forge::north_star_of_issue(&repo, &i.issue, &i.body);
            out.push(Event {
                key: format!("issue/{repo}#{}", i.issue.number),
                ctx: json!({"issue": {
                    "number": i.issue.number, "title": i.issue.title, "url": i.issue.url,
                    "body": i.body, "labels": i.issue.labels, "repo": repo,
                }}),
                number: Some(i.issue.number),
                forge: Some(ForgeLink {
                    repo,
                    issue: Some(i.issue),
                    pull_request: None,
                    progress_comment: None,
                }),
                star: Some(star),
            });
        }
        Ok(out)
    }

    async fn swap_label(&self, repo: Option<&str>, number: u64, label: &str, claim: &str) {
        let swapped = async {
            let client = self.client(repo).await?;
            client
                .add_labels(number, &[claim])
                .await
                .map_err(|e| e.to_string())?;
            client
                .remove_label(number, label)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = swapped.await {
            tracing::warn!(issue = number, %e, "cannot swap the ready label for the claim label");
        }
    }

    /// The issues `bd ready --json` lists (a raw array, or `{"data": [...]}`).
    async fn beads_ready(&self, command: &str) -> Result<Vec<Event>, String> {
        let (code, out) =
            crate::process::output(command, &self.config.root, Duration::from_secs(60))
                .await
                .map_err(|e| format!("`{command}`: {e}"))?;
        if code != Some(0) {
            return Err(format!(
                "`{command}` exited {}: {}",
                code.map_or("by a signal".into(), |c| c.to_string()),
                out.lines().last().unwrap_or("")
            ));
        }
        let v: Value = serde_json::from_str(&out)
            .map_err(|e| format!("`{command}` did not print JSON: {e}"))?;
        let items = match v {
            Value::Array(a) => a,
            Value::Object(mut o) => match o.remove("data") {
                Some(Value::Array(a)) => a,
                _ => return Err(format!("`{command}`: JSON without a `data` list")),
            },
            _ => return Err(format!("`{command}`: not a list of issues")),
        };
        let mut out = Vec::new();
        for item in items {
            let id = item["id"]
                .as_str()
                .ok_or_else(|| format!("`{command}`: an issue without an id"))?
                .to_string();
            let title = item["title"].as_str().unwrap_or_default().to_string();
            let description = item["description"].as_str().unwrap_or_default().to_string();
            let star = format!("Beads issue {id}: {title}\n\n{description}")
                .trim()
                .to_string();
            out.push(Event {
                key: format!("beads/{id}"),
                ctx: json!({"issue": {
                    "id": id, "number": id, "title": title, "description": description,
                    "body": description, "labels": item["labels"], "priority": item["priority"],
                }}),
                number: None,
                forge: None,
                star: Some(star),
            });
        }
        Ok(out)
    }

    /// The open pull requests into `base` (drafts only when asked), one event per head commit.
    async fn open_pulls(
        &self,
        repo: Option<&str>,
        base: Option<&str>,
        drafts: bool,
    ) -> Result<Vec<Event>, String> {
        let client = self.client(repo).await?;
        let repo = client.repo().to_string();
        let pulls = client.open_pulls().await.map_err(|e| e.to_string())?;
        Ok(pulls
            .into_iter()
            .filter(|p| drafts || !p.pull.draft)
            .filter(|p| base.is_none_or(|b| p.base_ref == b))
            .map(|p| {
                let star = format!("Review pull request {repo}#{}: {}", p.pull.number, p.title);
                Event {
                    key: format!("pr/{repo}#{}@{}", p.pull.number, p.head_sha),
                    ctx: json!({"pr": {
                        "number": p.pull.number, "title": p.title, "url": p.pull.url,
                        "head": p.head_sha, "branch": p.head_ref, "base": p.base_ref,
                        "author": p.author, "repo": repo,
                    }}),
                    number: Some(p.pull.number),
                    forge: Some(ForgeLink {
                        repo: repo.clone(),
                        issue: None,
                        pull_request: Some(p.pull),
                        progress_comment: None,
                    }),
                    star: Some(star),
                }
            })
            .collect())
    }
}

/// One thing a forge trigger fires for.
struct Event {
    /// What fired (the firing id's input): `issue/owner/repo#12`, `pr/…@sha`, `beads/<id>`.
    key: String,
    /// What its templates see.
    ctx: Value,
    /// The issue's or pull request's number.
    number: Option<u64>,
    /// The assignment's forge link.
    forge: Option<ForgeLink>,
    /// Its north star, when the event says more than the workflow's.
    star: Option<String>,
}

/// What a cron firing's templates see of its slot.
fn slot_context(slot: Millis, l: &Loaded) -> Value {
    let when = chrono::Utc.timestamp_millis_opt(slot as i64).single();
    let (iso, date) = match (when, &l.cron) {
        (Some(w), Some((_, tz))) => {
            let local = w.with_timezone(tz);
            (local.to_rfc3339(), local.format("%Y-%m-%d").to_string())
        }
        _ => (slot.to_string(), String::new()),
    };
    json!({"ms": slot, "iso": iso, "date": date})
}

/// Runs `engine` until `stop`: a tick, then a sleep until the next trigger is due (at most a
/// minute, so a new or edited state is seen), no polling in between.
pub async fn run(engine: Engine, stop: CancellationToken) {
    loop {
        engine.tick(now_ms()).await;
        let now = now_ms();
        let wait = engine
            .next_due(now)
            .await
            .map_or(Duration::from_secs(60), |at| {
                Duration::from_millis(at.saturating_sub(now).clamp(50, 60_000))
            });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}
