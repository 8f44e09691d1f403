//! Checking a workflow file before anything is stored: its keys, parameters, task ids,
//! dependencies (a cycle is named), gates, retries, loops and every template, each error
//! naming what is wrong.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use minijinja::{Environment, UndefinedBehavior};

use super::raw::{RawRetry, RawTask, RawWorkflow};
use super::spec::{Gate, LoopSpec, OnFailure, Publish, TaskRetry};
use super::{Source, WorkflowError};
use crate::clock::parse_duration;
use crate::model::{FailureReason, JobType};

/// Most tasks in a workflow.
pub const MAX_TASKS: usize = 64;
/// Most rounds a loop may have.
pub const MAX_LOOP_ROUNDS: u32 = 10;
/// Most attempts a retry policy may give.
pub const MAX_ATTEMPTS: u32 = 10;
/// The failure reasons retried when a policy names none.
const DEFAULT_RETRY_ON: [FailureReason; 4] = [
    FailureReason::Timeout,
    FailureReason::IdleTimeout,
    FailureReason::MalformedStream,
    FailureReason::SpawnError,
];

/// A parameter, checked.
#[derive(Debug, Clone)]
pub struct Param {
    /// What it means.
    pub description: Option<String>,
    /// It must be given.
    pub required: bool,
    /// Its value when not given.
    pub default: Option<String>,
    /// The values allowed.
    pub choices: Option<Vec<String>>,
    /// The pattern the whole value must match, as written.
    pub pattern: Option<String>,
    matcher: Option<regex::Regex>,
}

impl Param {
    /// Why `value` is not a valid value of parameter `name`, if it is not.
    pub fn refuse(&self, name: &str, value: &str) -> Option<String> {
        if let Some(choices) = &self.choices {
            if !choices.iter().any(|c| c == value) {
                return Some(format!(
                    "parameter `{name}`: {value:?} is not one of {}",
                    choices.join(", ")
                ));
            }
        }
        if let (Some(m), Some(p)) = (&self.matcher, &self.pattern) {
            if !m.is_match(value) {
                return Some(format!(
                    "parameter `{name}`: {value:?} does not match its pattern {p}"
                ));
            }
        }
        None
    }
}

/// A task, checked; its texts are still templates.
#[derive(Debug, Clone)]
pub struct Task {
    /// Its id.
    pub id: String,
    /// Its job type ([`JobType::Gate`] for a gate).
    pub job_type: JobType,
    /// What the agent is to do (a template).
    pub instructions: String,
    /// When it is done.
    pub acceptance: Vec<String>,
    /// Tasks that must succeed first.
    pub depends_on: Vec<String>,
    /// Its harness.
    pub harness: Option<String>,
    /// Its model.
    pub model: Option<String>,
    /// Commands run after the agent (templates).
    pub verify: Vec<String>,
    /// Its gate (templates).
    pub gate: Option<Gate>,
    /// Its retry policy.
    pub retry: Option<TaskRetry>,
    /// Its failure policy.
    pub on_failure: OnFailure,
    /// Its loop.
    pub loop_spec: Option<LoopSpec>,
    /// It needs a verdict.
    pub verdict: bool,
    /// What the runner publishes of it.
    pub publish: Option<Publish>,
}

/// A workflow, checked.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// What it is for.
    pub description: Option<String>,
    /// The north star template.
    pub north_star: Option<String>,
    /// The parameter naming the forge issue.
    pub forge_issue: Option<String>,
    /// The parameter naming the pull request.
    pub forge_pull_request: Option<String>,
    /// Whether the branch becomes a pull request at completion.
    pub pull_request: bool,
    /// Its parameters by name.
    pub params: BTreeMap<String, Param>,
    /// Its tasks, in file order.
    pub tasks: Vec<Task>,
    /// Where it came from.
    pub source: Source,
    /// A hash of its text.
    pub hash: String,
}

/// Parses and checks the workflow in `text` (from `file`, for messages).
pub fn parse(text: &str, file: &str, source: Source) -> Result<Workflow, WorkflowError> {
    let err = |message: String| WorkflowError {
        file: file.to_string(),
        message,
    };
    let raw: RawWorkflow = toml::from_str(text).map_err(|e| err(describe_toml(&e, text)))?;
    let mut wf = check(raw, source).map_err(err)?;
    wf.hash = format!("{:016x}", crate::chain::fingerprint(text));
    Ok(wf)
}

/// A TOML error as one line with its place: `line 3: unknown field …`.
fn describe_toml(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

fn valid_name(what: &str, name: &str, max: usize) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} must be 1 to {max} characters of a-z, 0-9, - and _, starting with a letter or digit"
        ))
    }
}

fn check(raw: RawWorkflow, source: Source) -> Result<Workflow, String> {
    valid_name("workflow name", &raw.workflow, 64)?;
    if raw.version == 0 {
        return Err("version: must be 1 or more".into());
    }
    let params = check_params(&raw)?;
    let default_failure = match &raw.defaults.on_failure {
        Some(f) => on_failure(f).map_err(|e| format!("defaults.on_failure: {e}"))?,
        None => OnFailure::Pm,
    };
    let default_retry = raw
        .defaults
        .retry
        .as_ref()
        .map(|r| retry(r).map_err(|e| format!("defaults.retry: {e}")))
        .transpose()?;
    if raw.tasks.is_empty() {
        return Err("no tasks: a workflow needs at least one [[tasks]]".into());
    }
    if raw.tasks.len() > MAX_TASKS {
        return Err(format!(
            "{} tasks; a workflow has at most {MAX_TASKS}",
            raw.tasks.len()
        ));
    }
    check_graph(&raw.tasks)?;
    let mut tasks = Vec::new();
    for t in &raw.tasks {
        let task = check_task(t, &raw, default_failure, default_retry.as_ref())
            .map_err(|e| format!("task `{}`: {e}", t.id))?;
        tasks.push(task);
    }
    resolve_loops(&mut tasks)?;
    let wf = Workflow {
        name: raw.workflow.clone(),
        version: raw.version,
        description: raw.description.clone(),
        north_star: raw.north_star.clone(),
        forge_issue: raw.forge_issue.clone(),
        forge_pull_request: raw.forge_pull_request.clone(),
        pull_request: raw.pull_request.unwrap_or(true),
        params,
        tasks,
        source,
        hash: String::new(),
    };
    for (name, param) in [
        ("forge_issue", &wf.forge_issue),
        ("forge_pull_request", &wf.forge_pull_request),
    ] {
        if let Some(p) = param {
            if !wf.params.contains_key(p) {
                return Err(format!("{name}: `{p}` is no declared parameter"));
            }
        }
    }
    check_templates(&wf)?;
    Ok(wf)
}

/// Task ids are valid and unique, dependencies name tasks, and there is no cycle.
fn check_graph(tasks: &[RawTask]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for t in tasks {
        valid_name("task id", &t.id, 32)?;
        if !seen.insert(t.id.as_str()) {
            return Err(format!("task id `{}` is used twice", t.id));
        }
    }
    for t in tasks {
        for d in &t.depends_on {
            if !seen.contains(d.as_str()) {
                return Err(format!(
                    "task `{}`: depends_on names `{d}`, which is no task of this workflow",
                    t.id
                ));
            }
            if d == &t.id {
                return Err(format!("task `{}` depends on itself", t.id));
            }
        }
    }
    if let Some(cycle) = find_cycle(tasks) {
        return Err(format!(
            "the tasks depend on each other in a cycle: {} (each depends on the next)",
            cycle.join(" → ")
        ));
    }
    Ok(())
}

fn check_params(raw: &RawWorkflow) -> Result<BTreeMap<String, Param>, String> {
    let mut params = BTreeMap::new();
    for (name, p) in &raw.params {
        let ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(format!(
                "parameter name {name:?}: use a-z, 0-9 and _, starting with a letter"
            ));
        }
        if matches!(&p.choices, Some(c) if c.is_empty()) {
            return Err(format!("parameter `{name}`: enum is empty"));
        }
        let matcher = match &p.pattern {
            None => None,
            Some(pat) => Some(regex::Regex::new(&format!("^(?:{pat})$")).map_err(|e| {
                format!("parameter `{name}`: pattern {pat:?} is not a regular expression: {e}")
            })?),
        };
        let param = Param {
            description: p.description.clone(),
            required: p.required,
            default: p.default.clone(),
            choices: p.choices.clone(),
            pattern: p.pattern.clone(),
            matcher,
        };
        if let Some(d) = &param.default {
            if let Some(why) = param.refuse(name, d) {
                return Err(format!("{why} (its default)"));
            }
        }
        params.insert(name.clone(), param);
    }
    Ok(params)
}

/// A dependency cycle, as task ids (the first repeated at the end), if there is one.
fn find_cycle(tasks: &[RawTask]) -> Option<Vec<String>> {
    let deps: HashMap<&str, &[String]> = tasks
        .iter()
        .map(|t| (t.id.as_str(), t.depends_on.as_slice()))
        .collect();
    // 0: unvisited, 1: on the path, 2: done.
    let mut state: HashMap<&str, u8> = HashMap::new();
    let mut path: Vec<&str> = Vec::new();
    fn visit<'a>(
        id: &'a str,
        deps: &HashMap<&'a str, &'a [String]>,
        state: &mut HashMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(id) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| *p == id).expect("on the path");
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(id.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(id, 1);
        path.push(id);
        for d in deps.get(id).copied().unwrap_or_default() {
            if let Some(c) = visit(d, deps, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(id, 2);
        None
    }
    tasks
        .iter()
        .find_map(|t| visit(&t.id, &deps, &mut state, &mut path))
}

fn on_failure(text: &str) -> Result<OnFailure, String> {
    text.parse::<OnFailure>()
}

fn retry(raw: &RawRetry) -> Result<TaskRetry, String> {
    if raw.attempts == 0 || raw.attempts > MAX_ATTEMPTS {
        return Err(format!(
            "attempts: {} is not 1 to {MAX_ATTEMPTS}",
            raw.attempts
        ));
    }
    let on = match &raw.on {
        None => DEFAULT_RETRY_ON.to_vec(),
        Some(list) => {
            let mut out = Vec::new();
            for r in list {
                let reason = r.parse::<FailureReason>().map_err(|e| format!("on: {e}"))?;
                if matches!(
                    reason,
                    FailureReason::Cancelled | FailureReason::Budget | FailureReason::Verdict
                ) {
                    return Err(format!(
                        "on: `{reason}` is never retried (a human cancelled, a budget ran out, or a verdict said fail: loops handle verdicts)"
                    ));
                }
                out.push(reason);
            }
            out
        }
    };
    let backoff_ms = match &raw.backoff {
        None => 30_000,
        Some(b) => parse_duration(b).map_err(|e| format!("backoff: {e}"))?,
    };
    Ok(TaskRetry {
        attempts: raw.attempts,
        on,
        backoff_ms,
    })
}

fn check_task(
    t: &RawTask,
    raw: &RawWorkflow,
    default_failure: OnFailure,
    default_retry: Option<&TaskRetry>,
) -> Result<Task, String> {
    let gate = t.gate.as_ref().map(gate).transpose()?;
    let job_type = job_type_of(t, gate.is_some())?;
    let loop_spec = loop_of(t, raw)?;
    Ok(Task {
        id: t.id.clone(),
        job_type,
        instructions: t.instructions.clone().unwrap_or_default(),
        acceptance: t.acceptance.clone(),
        depends_on: t.depends_on.clone(),
        harness: t
            .harness
            .clone()
            .or(raw.defaults.harness.clone())
            .filter(|_| gate.is_none()),
        model: t
            .model
            .clone()
            .or(raw.defaults.model.clone())
            .filter(|_| gate.is_none()),
        verify: t.verify.clone(),
        retry: match &t.retry {
            Some(r) => Some(retry(r).map_err(|e| format!("retry.{e}"))?),
            None => default_retry.cloned().filter(|_| t.gate.is_none()),
        },
        gate,
        on_failure: match &t.on_failure {
            Some(f) => on_failure(f).map_err(|e| format!("on_failure: {e}"))?,
            None => default_failure,
        },
        loop_spec,
        verdict: t.verdict,
        publish: t
            .publish
            .as_deref()
            .map(|p| p.parse::<Publish>().map_err(|e| format!("publish: {e}")))
            .transpose()?,
    })
}

/// The task's job type: its `type`, or gate for a gate, whose agent-only keys are refused.
fn job_type_of(t: &RawTask, is_gate: bool) -> Result<JobType, String> {
    let job_type = match (&t.job_type, is_gate) {
        (Some(ty), false) => match ty.parse::<JobType>()? {
            JobType::Pm => {
                return Err(
                    "type pm: the PM runs by itself after every unit; a task cannot be one".into(),
                )
            }
            JobType::Gate => return Err("type gate needs a [tasks.gate]".into()),
            other => other,
        },
        (None, false) => {
            return Err("no type (plan, implement, review, uat, document) and no gate".into())
        }
        (Some(ty), true) if ty != "gate" => {
            return Err(format!(
                "a gate runs no agent, so it has no type (found {ty:?})"
            ))
        }
        (_, true) => JobType::Gate,
    };
    if is_gate {
        let agent_only = [
            ("instructions", t.instructions.is_some()),
            ("harness", t.harness.is_some()),
            ("model", t.model.is_some()),
            ("verify", !t.verify.is_empty()),
            ("loop", t.loop_spec.is_some()),
            ("verdict", t.verdict),
            ("publish", t.publish.is_some()),
            ("retry", t.retry.is_some()),
        ];
        if let Some((key, _)) = agent_only.iter().find(|(_, set)| *set) {
            return Err(format!("a gate runs no agent, so it takes no {key}"));
        }
    } else if t
        .instructions
        .as_deref()
        .is_none_or(|i| i.trim().is_empty())
    {
        return Err("instructions are empty: say what the agent is to do".into());
    }
    Ok(job_type)
}

/// The task's loop, checked on its own (the tasks it spans are found later).
fn loop_of(t: &RawTask, raw: &RawWorkflow) -> Result<Option<LoopSpec>, String> {
    let Some(l) = &t.loop_spec else {
        return Ok(None);
    };
    if l.max == 0 || l.max > MAX_LOOP_ROUNDS {
        return Err(format!("loop.max: {} is not 1 to {MAX_LOOP_ROUNDS}", l.max));
    }
    if !t.verdict {
        return Err(
            "a loop repeats while the verdict is fail, so the task needs verdict = true".into(),
        );
    }
    if !raw.tasks.iter().any(|x| x.id == l.from) {
        return Err(format!("loop.from names `{}`, which is no task", l.from));
    }
    Ok(Some(LoopSpec {
        from: l.from.clone(),
        tasks: Vec::new(),
        max: l.max,
    }))
}

fn gate(g: &super::raw::RawGate) -> Result<Gate, String> {
    match g.kind.as_str() {
        "human" => {
            if g.run.is_some() || g.every.is_some() || g.timeout.is_some() {
                return Err("gate: a human gate takes only a prompt".into());
            }
            match &g.prompt {
                Some(p) if !p.trim().is_empty() => Ok(Gate::Human { prompt: p.clone() }),
                _ => Err("gate: a human gate needs a prompt (what the human is asked)".into()),
            }
        }
        "command" => {
            if g.prompt.is_some() {
                return Err(
                    "gate: a command gate takes run, every and timeout, not a prompt".into(),
                );
            }
            let run = match &g.run {
                Some(r) if !r.trim().is_empty() => r.clone(),
                _ => return Err("gate: a command gate needs run (the command to poll)".into()),
            };
            let every_ms = g
                .every
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| format!("gate.every: {e}"))?
                .unwrap_or(30_000);
            let timeout_ms = g
                .timeout
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| format!("gate.timeout: {e}"))?
                .unwrap_or(3_600_000);
            if every_ms > timeout_ms {
                return Err("gate: every is longer than timeout".into());
            }
            Ok(Gate::Command {
                run,
                every_ms,
                timeout_ms,
            })
        }
        other => Err(format!(
            "gate.kind: unknown kind {other:?} (expected human or command)"
        )),
    }
}

/// The tasks `from` … `to` of a loop: those that depend (transitively) on `from` and that
/// `to` depends on, both included, in file order.
fn resolve_loops(tasks: &mut [Task]) -> Result<(), String> {
    let deps: HashMap<String, Vec<String>> = tasks
        .iter()
        .map(|t| (t.id.clone(), t.depends_on.clone()))
        .collect();
    let ancestors = |id: &str| {
        let mut out = BTreeSet::new();
        let mut stack = vec![id.to_string()];
        while let Some(x) = stack.pop() {
            if out.insert(x.clone()) {
                stack.extend(deps.get(&x).cloned().unwrap_or_default());
            }
        }
        out
    };
    let order: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let all: Vec<(String, BTreeSet<String>)> =
        order.iter().map(|id| (id.clone(), ancestors(id))).collect();
    for task in tasks.iter_mut() {
        let Some(l) = task.loop_spec.as_mut() else {
            continue;
        };
        let mine = &all.iter().find(|(id, _)| *id == task.id).expect("listed").1;
        if !mine.contains(&l.from) {
            return Err(format!(
                "task `{}`: loop.from `{}` is not a task it depends on (directly or not), so the loop would not lead back to it",
                task.id, l.from
            ));
        }
        l.tasks = all
            .iter()
            .filter(|(id, anc)| mine.contains(id) && anc.contains(&l.from))
            .map(|(id, _)| id.clone())
            .collect();
    }
    let gates: BTreeSet<&str> = tasks
        .iter()
        .filter(|t| t.gate.is_some())
        .map(|t| t.id.as_str())
        .collect();
    for task in tasks.iter() {
        if let Some(g) = task
            .loop_spec
            .as_ref()
            .and_then(|l| l.tasks.iter().find(|t| gates.contains(t.as_str())))
        {
            return Err(format!(
                "task `{}`: its loop would run gate `{g}` again; keep gates out of loops",
                task.id
            ));
        }
    }
    Ok(())
}

/// The variables a template may use: `north_star` (except in the north star itself),
/// `workflow`, and `params.<declared>`.
fn check_templates(wf: &Workflow) -> Result<(), String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let mut texts: Vec<(String, &str, bool)> = Vec::new();
    if let Some(n) = &wf.north_star {
        texts.push(("north_star".into(), n, false));
    }
    for t in &wf.tasks {
        texts.push((
            format!("task `{}`: instructions", t.id),
            &t.instructions,
            true,
        ));
        for (i, a) in t.acceptance.iter().enumerate() {
            texts.push((format!("task `{}`: acceptance[{i}]", t.id), a, true));
        }
        for (i, v) in t.verify.iter().enumerate() {
            texts.push((format!("task `{}`: verify[{i}]", t.id), v, true));
        }
        match &t.gate {
            Some(Gate::Human { prompt }) => {
                texts.push((format!("task `{}`: gate.prompt", t.id), prompt, true))
            }
            Some(Gate::Command { run, .. }) => {
                texts.push((format!("task `{}`: gate.run", t.id), run, true))
            }
            None => {}
        }
    }
    for (what, text, star_allowed) in texts {
        let template = env
            .template_from_str(text)
            .map_err(|e| format!("{what}: {}", super::describe_template_error(&e)))?;
        for var in template.undeclared_variables(true) {
            let known = match var.split_once('.') {
                Some(("params", p)) => wf.params.contains_key(p),
                None if var == "params" => true,
                None => var == "workflow" || (var == "north_star" && star_allowed),
                Some(_) => false,
            };
            if !known {
                let declared: Vec<&str> = wf.params.keys().map(String::as_str).collect();
                return Err(format!(
                    "{what} uses `{var}`, which is not defined: a template may use north_star, workflow and params.<name> (declared: {})",
                    if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
                ));
            }
        }
    }
    Ok(())
}
