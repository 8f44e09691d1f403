//! Triggers: `.wf/triggers.toml`, run by the runners — a cron schedule, an issue becoming
//! ready, a pull request opened or updated — each instantiating a workflow without a human.
//!
//! This module is the pure half: the file parsed and checked ([`parse`]), each trigger's
//! stored [`TriggerState`], the assignment id of a firing ([`firing_id`]: the same trigger and
//! slot, issue or head commit always give the same id, so however many runners fire it, the
//! store's create-if-absent lets one assignment exist), and the cron rule ([`plan_cron`]:
//! which due slots fire, are skipped because the last run is still going, or are missed after
//! downtime, by the catch-up policy). The runner's `triggers` module evaluates schedules and
//! polls forges.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::parse_duration;
use crate::model::{string_enum, Millis};

/// Where the triggers file lives in a project.
pub const TRIGGERS_FILE: &str = ".wf/triggers.toml";
/// The default poll interval of issue and pull request triggers.
pub const DEFAULT_POLL_MS: Millis = 60_000;
/// The shortest poll interval accepted (forges rate-limit).
pub const MIN_POLL_MS: Millis = 5_000;
/// The default `catch_up_window`.
pub const DEFAULT_CATCH_UP_WINDOW_MS: Millis = 12 * 3_600_000;
/// How late a slot may fire under `catch_up = "none"`.
pub const ON_TIME_MS: Millis = 60_000;

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTriggers {
    /// The triggers.
    #[serde(default)]
    pub triggers: Vec<RawTrigger>,
}

/// One `[[triggers]]` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    /// Its id.
    pub id: String,
    /// The workflow it instantiates.
    pub workflow: String,
    /// The workflow's parameters: templates over the event (`issue`, `pr`, `slot`).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The north star, a template over the event (default: the workflow's, or the issue's).
    #[serde(default)]
    pub north_star: Option<String>,
    /// Off without deleting it.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The assignments' priority.
    #[serde(default)]
    pub priority: Option<i64>,
    /// A cron expression (5 fields, or 6 with seconds; `@daily` and the like).
    #[serde(default)]
    pub cron: Option<String>,
    /// The cron's time zone (IANA name; default UTC).
    #[serde(default)]
    pub tz: Option<String>,
    /// After downtime: `latest` (default), `none` or `all`.
    #[serde(default)]
    pub catch_up: Option<String>,
    /// How late a missed slot may still fire (default 12h).
    #[serde(default)]
    pub catch_up_window: Option<String>,
    /// Most slots `catch_up = "all"` fires at once (default 10).
    #[serde(default)]
    pub max_catch_up: Option<u32>,
    /// While the last firing's assignment is not complete: `skip` (default), `queue`, `allow`.
    #[serde(default)]
    pub overlap: Option<String>,
    /// Fire for each issue that becomes ready.
    #[serde(default)]
    pub issue_ready: Option<RawIssueReady>,
    /// Fire for each pull request opened or updated.
    #[serde(default)]
    pub pull_request: Option<RawPullRequest>,
    /// How often a forge is polled (default 60s).
    #[serde(default)]
    pub interval: Option<String>,
    /// What the runner does on the forge when a fired assignment completes.
    #[serde(default)]
    pub on_complete: Option<RawOnComplete>,
}

/// `issue_ready = { … }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssueReady {
    /// `github` (default) or `beads`.
    #[serde(default)]
    pub source: Option<String>,
    /// The label that marks issues ready (GitHub; default `wf:ready`).
    #[serde(default)]
    pub label: Option<String>,
    /// `owner/repo` (default: the forge's).
    #[serde(default)]
    pub repo: Option<String>,
    /// The label a fired issue gets instead of `label` (e.g. `wf:in-progress`).
    #[serde(default)]
    pub claim_label: Option<String>,
    /// The beads command (default `bd ready --json`).
    #[serde(default)]
    pub command: Option<String>,
}

/// `pull_request = { … }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPullRequest {
    /// `owner/repo` (default: the forge's).
    #[serde(default)]
    pub repo: Option<String>,
    /// Only pull requests into this branch.
    #[serde(default)]
    pub base: Option<String>,
    /// Also draft pull requests (default false).
    #[serde(default)]
    pub drafts: Option<bool>,
}

/// `on_complete = { … }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnComplete {
    /// Close the assignment's issue.
    #[serde(default)]
    pub close_issue: bool,
    /// Comment on the issue (a template over the assignment: `assignment.id`, `.pull_request`).
    #[serde(default)]
    pub comment: Option<String>,
    /// Remove this label from the issue.
    #[serde(default)]
    pub remove_label: Option<String>,
    /// Add this label to the issue.
    #[serde(default)]
    pub add_label: Option<String>,
}

string_enum! {
    /// Which missed cron slots fire after downtime.
    CatchUp {
        /// Only the newest missed slot, if it is within the window.
        Latest => "latest",
        /// None: a slot fires only on time.
        Never => "none",
        /// Every missed slot within the window, up to `max_catch_up`.
        All => "all",
    }
}

string_enum! {
    /// What a slot does while the trigger's previous assignment is not complete.
    Overlap {
        /// The slot is skipped (and counted).
        Skip => "skip",
        /// It fires; its assignment waits its turn with the other sequential ones.
        Queue => "queue",
        /// It fires and runs alongside.
        Allow => "allow",
    }
}

/// What due cron slots do: catch-up after downtime, and overlap with the last firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronPolicy {
    /// Which missed slots fire.
    pub catch_up: CatchUp,
    /// How late a slot may still fire.
    pub window_ms: Millis,
    /// Most slots fired at once under `all`.
    pub max_catch_up: u32,
    /// While the previous firing is not complete.
    pub overlap: Overlap,
}

/// Where ready issues come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadySource {
    /// GitHub: open issues with `label` whose blockers are all closed.
    GitHub {
        /// The label.
        label: String,
        /// `owner/repo`, else the forge's.
        repo: Option<String>,
        /// The label a fired issue gets instead.
        claim_label: Option<String>,
    },
    /// A beads tracker: the issues `bd ready --json` lists.
    Beads {
        /// The command.
        command: String,
    },
}

/// What makes a trigger fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerKind {
    /// A cron schedule.
    Cron {
        /// The expression (checked by the runner's cron parser).
        expr: String,
        /// The IANA time zone.
        tz: String,
        /// Catch-up and overlap.
        policy: CronPolicy,
    },
    /// Each issue that becomes ready.
    IssueReady {
        /// Where from.
        source: ReadySource,
        /// Poll interval.
        interval_ms: Millis,
    },
    /// Each pull request opened or updated (each new head commit).
    PullRequest {
        /// `owner/repo`, else the forge's.
        repo: Option<String>,
        /// Only into this branch.
        base: Option<String>,
        /// Drafts too.
        drafts: bool,
        /// Poll interval.
        interval_ms: Millis,
    },
}

/// A trigger, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Its id.
    pub id: String,
    /// The workflow it instantiates.
    pub workflow: String,
    /// Parameter templates.
    pub params: BTreeMap<String, String>,
    /// North star template.
    pub north_star: Option<String>,
    /// Whether it runs.
    pub enabled: bool,
    /// The assignments' priority.
    pub priority: i64,
    /// What makes it fire.
    pub kind: TriggerKind,
    /// Forge actions when a fired assignment completes.
    pub on_complete: Option<RawOnComplete>,
}

impl Trigger {
    /// One line saying what makes it fire.
    pub fn describe(&self) -> String {
        match &self.kind {
            TriggerKind::Cron { expr, tz, .. } => format!("cron `{expr}` ({tz})"),
            TriggerKind::IssueReady {
                source: ReadySource::GitHub { label, repo, .. },
                ..
            } => format!(
                "issues labelled `{label}` with no open blocker{}",
                repo.as_ref()
                    .map(|r| format!(" in {r}"))
                    .unwrap_or_default()
            ),
            TriggerKind::IssueReady {
                source: ReadySource::Beads { command },
                ..
            } => format!("beads issues `{command}` lists"),
            TriggerKind::PullRequest { repo, base, .. } => format!(
                "pull requests opened or updated{}{}",
                repo.as_ref()
                    .map(|r| format!(" in {r}"))
                    .unwrap_or_default(),
                base.as_ref()
                    .map(|b| format!(" into {b}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// The poll interval of a forge trigger.
    pub fn interval_ms(&self) -> Option<Millis> {
        match &self.kind {
            TriggerKind::Cron { .. } => None,
            TriggerKind::IssueReady { interval_ms, .. }
            | TriggerKind::PullRequest { interval_ms, .. } => Some(*interval_ms),
        }
    }
}

/// Parses and checks the triggers in `text` (from `file`). The cron expressions, time zones
/// and workflows are checked by the caller, which knows how.
pub fn parse(text: &str, file: &str) -> Result<Vec<Trigger>, String> {
    let raw: RawTriggers = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().trim().replace('\n', " ");
        match line {
            Some(l) => format!("{file}: line {l}: {message}"),
            None => format!("{file}: {message}"),
        }
    })?;
    let mut out: Vec<Trigger> = Vec::new();
    for (i, t) in raw.triggers.iter().enumerate() {
        let trigger = check(t).map_err(|e| {
            let name = if t.id.is_empty() {
                format!("triggers[{i}]")
            } else {
                format!("trigger `{}`", t.id)
            };
            format!("{file}: {name}: {e}")
        })?;
        if out.iter().any(|o| o.id == trigger.id) {
            return Err(format!("{file}: trigger id `{}` is used twice", trigger.id));
        }
        out.push(trigger);
    }
    Ok(out)
}

fn interval(t: &RawTrigger) -> Result<Millis, String> {
    let ms = match &t.interval {
        None => DEFAULT_POLL_MS,
        Some(i) => parse_duration(i).map_err(|e| format!("interval: {e}"))?,
    };
    if ms < MIN_POLL_MS {
        return Err(format!(
            "interval: at least {}s (forges limit how often they are asked)",
            MIN_POLL_MS / 1000
        ));
    }
    Ok(ms)
}

fn cron_kind(t: &RawTrigger, expr: &str) -> Result<TriggerKind, String> {
    if t.interval.is_some() {
        return Err("interval goes with issue_ready and pull_request, not cron".into());
    }
    Ok(TriggerKind::Cron {
        expr: expr.trim().to_string(),
        tz: t.tz.clone().unwrap_or_else(|| "UTC".into()),
        policy: CronPolicy {
            catch_up: match &t.catch_up {
                None => CatchUp::Latest,
                Some(c) => c.parse().map_err(|e| format!("catch_up: {e}"))?,
            },
            window_ms: match &t.catch_up_window {
                None => DEFAULT_CATCH_UP_WINDOW_MS,
                Some(w) => parse_duration(w).map_err(|e| format!("catch_up_window: {e}"))?,
            },
            max_catch_up: match t.max_catch_up {
                None => 10,
                Some(0) => return Err("max_catch_up: at least 1".into()),
                Some(n) => n.min(100),
            },
            overlap: match &t.overlap {
                None => Overlap::Skip,
                Some(o) => o.parse().map_err(|e| format!("overlap: {e}"))?,
            },
        },
    })
}

fn ready_kind(t: &RawTrigger, r: &RawIssueReady) -> Result<TriggerKind, String> {
    let source = match r.source.as_deref() {
        None | Some("github") => {
            if r.command.is_some() {
                return Err("issue_ready.command goes with source = \"beads\"".into());
            }
            ReadySource::GitHub {
                label: r.label.clone().unwrap_or_else(|| "wf:ready".into()),
                repo: r.repo.clone(),
                claim_label: r.claim_label.clone(),
            }
        }
        Some("beads") => {
            if r.label.is_some() || r.repo.is_some() || r.claim_label.is_some() {
                return Err("issue_ready: label, repo and claim_label go with GitHub; beads decides readiness itself".into());
            }
            ReadySource::Beads {
                command: r
                    .command
                    .clone()
                    .unwrap_or_else(|| "bd ready --json".into()),
            }
        }
        Some(other) => {
            return Err(format!(
                "issue_ready.source: unknown source {other:?} (expected github or beads)"
            ))
        }
    };
    Ok(TriggerKind::IssueReady {
        source,
        interval_ms: interval(t)?,
    })
}

fn check(t: &RawTrigger) -> Result<Trigger, String> {
    let ok_id = !t.id.is_empty()
        && t.id.len() <= 48
        && t.id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok_id {
        return Err("id: 1 to 48 characters of a-z, 0-9, - and _".into());
    }
    if t.workflow.trim().is_empty() {
        return Err("workflow: which workflow it instantiates".into());
    }
    let cron_keys = t.tz.is_some()
        || t.catch_up.is_some()
        || t.catch_up_window.is_some()
        || t.max_catch_up.is_some()
        || t.overlap.is_some();
    let kind = match (&t.cron, &t.issue_ready, &t.pull_request) {
        (Some(expr), None, None) => cron_kind(t, expr)?,
        (None, Some(r), None) if !cron_keys => ready_kind(t, r)?,
        (None, None, Some(p)) if !cron_keys => TriggerKind::PullRequest {
            repo: p.repo.clone(),
            base: p.base.clone(),
            drafts: p.drafts.unwrap_or(false),
            interval_ms: interval(t)?,
        },
        (None, _, _) | (_, None, None) if cron_keys && t.cron.is_none() => {
            return Err(
                "tz, catch_up, catch_up_window, max_catch_up and overlap go with cron".into(),
            )
        }
        _ => return Err("give exactly one of cron, issue_ready or pull_request".into()),
    };
    Ok(Trigger {
        id: t.id.clone(),
        workflow: t.workflow.clone(),
        params: t.params.clone(),
        north_star: t.north_star.clone(),
        enabled: t.enabled.unwrap_or(true),
        priority: t.priority.unwrap_or(10),
        kind,
        on_complete: t.on_complete.clone(),
    })
}

/// What the store keeps of a trigger, changed only by compare-and-swap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerState {
    /// The newest cron slot dealt with (fired, skipped or missed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<Millis>,
    /// When it last created an assignment (the slot, or the poll that found the event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<Millis>,
    /// The assignment it last created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_assignment: Option<String>,
    /// Assignments it created.
    #[serde(default)]
    pub fired: u64,
    /// Slots skipped because the previous assignment was not complete.
    #[serde(default)]
    pub skipped: u64,
    /// Slots missed (downtime beyond the catch-up policy).
    #[serde(default)]
    pub missed: u64,
    /// When a forge was last polled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll: Option<Millis>,
    /// The last poll's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The state record key of trigger `id`.
pub fn state_key(id: &str) -> String {
    format!("trigger.{id}")
}

/// The assignment id of trigger `id` firing for `event` (a slot in ms, `issue/<repo>#<n>`,
/// `pr/<repo>#<n>@<sha>`): the same inputs always give the same id.
pub fn firing_id(namespace: &str, id: &str, event: &str) -> String {
    crate::ids::from_random(crate::chain::fingerprint(&format!(
        "trigger/{namespace}/{id}/{event}"
    )))
}

/// What one cron slot does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAction {
    /// An assignment is created for it.
    Fire,
    /// Skipped: the previous assignment is not complete (`overlap = "skip"`).
    Skip,
    /// Missed: too late by the catch-up policy.
    Miss,
}

/// The decision for the slots due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronPlan {
    /// Each due slot, oldest first, with what it does.
    pub slots: Vec<(Millis, SlotAction)>,
    /// Slots missed without being listed (more than were enumerated).
    pub also_missed: u64,
    /// The new `last_slot`.
    pub last_slot: Millis,
}

/// Decides the cron slots `due` (ascending, all after `state.last_slot` and at or before
/// `now`; `more` counts further ones not enumerated, older than the first). A trigger seen
/// for the first time starts at `now`: nothing before it fires. `previous_running`: the last
/// firing's assignment is not complete.
pub fn plan_cron(
    state: &TriggerState,
    due: &[Millis],
    more: u64,
    now: Millis,
    policy: &CronPolicy,
    previous_running: bool,
) -> CronPlan {
    let CronPolicy {
        catch_up,
        window_ms,
        max_catch_up,
        overlap,
    } = *policy;
    let Some(last) = state.last_slot else {
        return CronPlan {
            slots: Vec::new(),
            also_missed: 0,
            last_slot: now,
        };
    };
    let in_time = |slot: Millis, limit: Millis| now.saturating_sub(slot) <= limit;
    let newest = due.last().copied();
    let mut slots: Vec<(Millis, SlotAction)> = due
        .iter()
        .map(|&s| {
            let fires = match catch_up {
                CatchUp::Latest => Some(s) == newest && in_time(s, window_ms),
                CatchUp::Never => in_time(s, ON_TIME_MS),
                CatchUp::All => in_time(s, window_ms),
            };
            (
                s,
                if fires {
                    SlotAction::Fire
                } else {
                    SlotAction::Miss
                },
            )
        })
        .collect();
    // `all` fires at most `max_catch_up`, the newest.
    let firing: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i].1 == SlotAction::Fire)
        .collect();
    let cap = max_catch_up as usize;
    if firing.len() > cap {
        for &i in &firing[..firing.len() - cap] {
            slots[i].1 = SlotAction::Miss;
        }
    }
    // While the last firing runs, `skip` skips the first slot that would fire; every later
    // one would overlap it as well.
    if previous_running && overlap == Overlap::Skip {
        for s in slots.iter_mut().filter(|s| s.1 == SlotAction::Fire) {
            s.1 = SlotAction::Skip;
        }
    }
    CronPlan {
        last_slot: newest.unwrap_or(last).max(last),
        slots,
        also_missed: more,
    }
}

impl TriggerState {
    /// The state after `plan`, whose fired slots created (or found) these assignments. Slots
    /// this state already dealt with (another runner recorded them first) count once.
    pub fn after_cron(&self, plan: &CronPlan, fired: &[(Millis, String)]) -> TriggerState {
        let mut next = self.clone();
        let done = self.last_slot.unwrap_or(0);
        next.last_slot = Some(plan.last_slot.max(done));
        for (_, action) in plan.slots.iter().filter(|(s, _)| *s > done) {
            match action {
                SlotAction::Fire => {}
                SlotAction::Skip => next.skipped += 1,
                SlotAction::Miss => next.missed += 1,
            }
        }
        if plan.slots.first().is_none_or(|(s, _)| *s > done) {
            next.missed += plan.also_missed;
        }
        let new: Vec<&(Millis, String)> = fired.iter().filter(|(s, _)| *s > done).collect();
        if let Some((slot, aid)) = new.iter().max_by_key(|(s, _)| *s) {
            next.fired += new.len() as u64;
            next.last_fired = Some(*slot);
            next.last_assignment = Some(aid.clone());
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    fn state(last: Option<Millis>) -> TriggerState {
        TriggerState {
            last_slot: last,
            ..Default::default()
        }
    }

    fn pol(
        catch_up: CatchUp,
        window_ms: Millis,
        max_catch_up: u32,
        overlap: Overlap,
    ) -> CronPolicy {
        CronPolicy {
            catch_up,
            window_ms,
            max_catch_up,
            overlap,
        }
    }

    fn actions(plan: &CronPlan) -> Vec<SlotAction> {
        plan.slots.iter().map(|s| s.1).collect()
    }

    #[test]
    fn a_new_trigger_starts_now_and_fires_nothing_from_before() {
        let p = plan_cron(
            &state(None),
            &[],
            0,
            10 * MIN,
            &pol(CatchUp::All, 60 * MIN, 10, Overlap::Allow),
            false,
        );
        assert_eq!((p.slots.len(), p.last_slot), (0, 10 * MIN));
    }

    #[test]
    // Long: every policy on the same three missed slots, side by side.
    fn catch_up_policies_after_three_missed_slots() {
        let s = state(Some(0));
        let due = [MIN, 2 * MIN, 3 * MIN];
        let now = 3 * MIN + 10_000;
        let latest = plan_cron(
            &s,
            &due,
            0,
            now,
            &pol(CatchUp::Latest, 60 * MIN, 10, Overlap::Allow),
            false,
        );
        assert_eq!(
            actions(&latest),
            [SlotAction::Miss, SlotAction::Miss, SlotAction::Fire]
        );
        assert_eq!(latest.last_slot, 3 * MIN);
        let all = plan_cron(
            &s,
            &due,
            0,
            now,
            &pol(CatchUp::All, 60 * MIN, 10, Overlap::Allow),
            false,
        );
        assert_eq!(actions(&all), [SlotAction::Fire; 3]);
        let capped = plan_cron(
            &s,
            &due,
            0,
            now,
            &pol(CatchUp::All, 60 * MIN, 2, Overlap::Allow),
            false,
        );
        assert_eq!(
            actions(&capped),
            [SlotAction::Miss, SlotAction::Fire, SlotAction::Fire]
        );
        let none = plan_cron(
            &s,
            &due,
            0,
            now,
            &pol(CatchUp::Never, 60 * MIN, 10, Overlap::Allow),
            false,
        );
        assert_eq!(
            actions(&none),
            [SlotAction::Miss, SlotAction::Miss, SlotAction::Fire]
        );
        let late = plan_cron(
            &s,
            &due,
            0,
            3 * MIN + 2 * MIN,
            &pol(CatchUp::Never, 60 * MIN, 10, Overlap::Allow),
            false,
        );
        assert_eq!(actions(&late), [SlotAction::Miss; 3]);
        let outside = plan_cron(
            &s,
            &due,
            0,
            200 * MIN,
            &pol(CatchUp::Latest, 60 * MIN, 10, Overlap::Allow),
            false,
        );
        assert_eq!(actions(&outside), [SlotAction::Miss; 3]);
        let after = s.after_cron(
            &all,
            &[
                (MIN, "a".into()),
                (2 * MIN, "b".into()),
                (3 * MIN, "c".into()),
            ],
        );
        assert_eq!(
            (after.fired, after.missed, after.last_assignment.as_deref()),
            (3, 0, Some("c"))
        );
        let after = s.after_cron(&latest, &[(3 * MIN, "c".into())]);
        assert_eq!(
            (after.fired, after.missed, after.last_slot),
            (1, 2, Some(3 * MIN))
        );
    }

    #[test]
    fn a_running_previous_assignment_skips_or_queues() {
        let s = state(Some(0));
        let skip = plan_cron(
            &s,
            &[MIN],
            0,
            MIN,
            &pol(CatchUp::Latest, MIN, 10, Overlap::Skip),
            true,
        );
        assert_eq!(actions(&skip), [SlotAction::Skip]);
        assert_eq!(s.after_cron(&skip, &[]).skipped, 1);
        let queue = plan_cron(
            &s,
            &[MIN],
            0,
            MIN,
            &pol(CatchUp::Latest, MIN, 10, Overlap::Queue),
            true,
        );
        assert_eq!(actions(&queue), [SlotAction::Fire]);
    }

    #[test]
    fn firing_ids_are_stable_and_distinct() {
        assert_eq!(
            firing_id("ns", "standup", "60000"),
            firing_id("ns", "standup", "60000")
        );
        assert_ne!(
            firing_id("ns", "standup", "60000"),
            firing_id("ns", "standup", "120000")
        );
        assert_ne!(
            firing_id("ns", "standup", "60000"),
            firing_id("other", "standup", "60000")
        );
        assert!(crate::ids::parse_prefix(&firing_id("ns", "a", "b")).is_ok());
    }

    #[test]
    fn bad_trigger_files_are_refused_naming_the_problem() {
        let ok = parse(
            "[[triggers]]\nid = \"standup\"\ncron = \"0 9 * * 1-5\"\ntz = \"Europe/Berlin\"\nworkflow = \"feature\"\n\n[[triggers]]\nid = \"ready\"\nworkflow = \"issue\"\nissue_ready = { label = \"wf:ready\" }\nparams = { issue = \"{{ issue.number }}\" }\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert!(matches!(
            ok[0].kind,
            TriggerKind::Cron {
                policy: CronPolicy {
                    catch_up: CatchUp::Latest,
                    overlap: Overlap::Skip,
                    ..
                },
                ..
            }
        ));
        for (text, want) in [
            ("[[triggers]]\nid = \"x\"\nworkflow = \"w\"\n", "exactly one of cron"),
            ("[[triggers]]\nid = \"x\"\nworkflow = \"w\"\ncron = \"* * * * *\"\nissue_ready = {}\n", "exactly one of cron"),
            ("[[triggers]]\nid = \"x\"\nworkflow = \"w\"\ncron = \"* * * * *\"\ncatch_up = \"some\"\n", "catch_up: unknown catchup \"some\""),
            ("[[triggers]]\nid = \"x\"\nworkflow = \"w\"\nissue_ready = {}\noverlap = \"skip\"\n", "go with cron"),
            ("[[triggers]]\nid = \"x\"\nworkflow = \"w\"\nissue_ready = {}\ninterval = \"1s\"\n", "interval: at least 5s"),
            ("[[triggers]]\nid = \"X Y\"\nworkflow = \"w\"\ncron = \"@daily\"\n", "id: 1 to 48"),
            ("[[triggers]]\nid = \"x\"\nworkflow = \"w\"\ncron = \"@daily\"\ncolour = 1\n", "line 5: unknown field `colour`"),
            ("[[triggers]]\nid = \"x\"\nworkflow = \"w\"\ncron = \"@daily\"\n[[triggers]]\nid = \"x\"\nworkflow = \"w\"\ncron = \"@daily\"\n", "`x` is used twice"),
        ] {
            let err = parse(text, "t.toml").unwrap_err();
            assert!(err.starts_with("t.toml: "), "{err}");
            assert!(err.contains(want), "want {want:?} in {err}");
        }
    }
}
