//! Instantiation: parameters bound and checked, every template rendered once (values go in as
//! data and are never rendered again), and the tasks ordered into units — one per level of
//! the dependency graph, gates on their own — that the chain runs in order.

use std::collections::{BTreeMap, HashMap};

use minijinja::{context, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use super::check::Workflow;
use super::spec::{Gate, TaskSpec, WorkflowRef};
use crate::model::JobType;

/// One task ready to become a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedTask {
    /// The job type ([`JobType::Gate`] for a gate).
    pub job_type: JobType,
    /// The harness, when the workflow names one.
    pub harness: Option<String>,
    /// The model, when the workflow names one.
    pub model: Option<String>,
    /// The job's context: the rendered instructions and acceptance criteria.
    pub context: String,
    /// What the job record keeps of the task.
    pub spec: TaskSpec,
}

/// A workflow instantiated: what `wf create --workflow` stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    /// The workflow as it was.
    pub workflow: WorkflowRef,
    /// The north star (given, or rendered from the workflow's).
    pub north_star: String,
    /// The forge issue the assignment works on, as the parameter gave it.
    pub forge_issue: Option<String>,
    /// The pull request the assignment is about, as the parameter gave it.
    pub forge_pull_request: Option<String>,
    /// The units in the order they run; a unit of several tasks runs in parallel.
    pub units: Vec<Vec<PlannedTask>>,
}

impl Plan {
    /// Every task, in chain order.
    pub fn tasks(&self) -> impl Iterator<Item = &PlannedTask> {
        self.units.iter().flatten()
    }
}

/// Binds `given` to the workflow's parameters: unknown names, missing required values and
/// values failing their enum or pattern are refused, naming the parameter.
pub fn bind(
    wf: &Workflow,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    for name in given.keys() {
        if !wf.params.contains_key(name) {
            let declared: Vec<&str> = wf.params.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown parameter `{name}`: workflow `{}` declares {}",
                wf.name,
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ));
        }
    }
    let mut bound = BTreeMap::new();
    for (name, param) in &wf.params {
        let value = match (given.get(name), &param.default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) if param.required => {
                let what = param
                    .description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                return Err(format!(
                    "missing parameter `{name}`{what}: give it with --param {name}=…"
                ));
            }
            (None, None) => String::new(),
        };
        if given.contains_key(name) || param.default.is_some() {
            if let Some(why) = param.refuse(name, &value) {
                return Err(why);
            }
        }
        bound.insert(name.clone(), value);
    }
    Ok(bound)
}

/// Instantiates `wf` with `given` parameters and the north star `star` (`None`: the
/// workflow's own north star template).
pub fn instantiate(
    wf: &Workflow,
    given: &BTreeMap<String, String>,
    star: Option<&str>,
) -> Result<Plan, String> {
    let params = bind(wf, given)?;
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    let render = |what: &str, text: &str, north_star: &str| -> Result<String, String> {
        env.render_str(
            text,
            context! { params => &params, north_star => north_star, workflow => &wf.name },
        )
        .map_err(|e| format!("{what}: {}", super::describe_template_error(&e)))
    };
    let north_star = match (star, &wf.north_star) {
        (Some(s), _) if !s.trim().is_empty() => s.to_string(),
        (_, Some(template)) => render("north_star", template, "")?,
        _ => {
            return Err(format!(
                "a north star is needed: workflow `{}` has no north_star of its own",
                wf.name
            ))
        }
    };
    let mut planned: HashMap<&str, PlannedTask> = HashMap::new();
    for t in &wf.tasks {
        let r =
            |what: &str, text: &str| render(&format!("task `{}`: {what}", t.id), text, &north_star);
        planned.insert(&t.id, plan_task(t, r)?);
    }
    let units = levels(wf)
        .into_iter()
        .flat_map(|level| {
            let (gates, work): (Vec<&str>, Vec<&str>) = level
                .into_iter()
                .partition(|id| wf.tasks.iter().any(|t| t.id == *id && t.gate.is_some()));
            gates
                .into_iter()
                .map(|g| vec![g])
                .chain((!work.is_empty()).then_some(work))
                .collect::<Vec<_>>()
        })
        .map(|unit| {
            unit.into_iter()
                .map(|id| planned.remove(id).expect("every task planned once"))
                .collect()
        })
        .collect();
    let param_of = |name: &Option<String>| name.as_ref().and_then(|p| params.get(p)).cloned();
    Ok(Plan {
        workflow: WorkflowRef {
            name: wf.name.clone(),
            version: wf.version,
            hash: wf.hash.clone(),
            source: wf.source.as_str().to_string(),
            params: params.clone(),
            no_pull_request: !wf.pull_request,
            trigger: None,
        },
        north_star,
        forge_issue: param_of(&wf.forge_issue).filter(|v| !v.is_empty()),
        forge_pull_request: param_of(&wf.forge_pull_request).filter(|v| !v.is_empty()),
        units,
    })
}

/// One task with its texts rendered by `r` (what, template).
fn plan_task(
    t: &super::check::Task,
    r: impl Fn(&str, &str) -> Result<String, String>,
) -> Result<PlannedTask, String> {
    let acceptance: Vec<String> = t
        .acceptance
        .iter()
        .map(|a| r("acceptance", a))
        .collect::<Result<_, _>>()?;
    let mut context = r("instructions", &t.instructions)?.trim().to_string();
    if !acceptance.is_empty() {
        context.push_str("\n\nAcceptance criteria (the task is done when all hold):\n");
        for a in &acceptance {
            context.push_str(&format!("- {a}\n"));
        }
    }
    if t.verdict && !context.contains("VERDICT") {
        context.push_str(
            "\n\nEnd your final answer with one line `VERDICT: pass` or `VERDICT: fail`; no verdict counts as fail.\n",
        );
    }
    let gate = match &t.gate {
        None => None,
        Some(Gate::Human { prompt }) => Some(Gate::Human {
            prompt: r("gate.prompt", prompt)?.trim().to_string(),
        }),
        Some(Gate::Command {
            run,
            every_ms,
            timeout_ms,
        }) => Some(Gate::Command {
            run: r("gate.run", run)?,
            every_ms: *every_ms,
            timeout_ms: *timeout_ms,
        }),
    };
    let spec = TaskSpec {
        id: t.id.clone(),
        depends_on: t.depends_on.clone(),
        round: 1,
        gate,
        verify: t
            .verify
            .iter()
            .map(|v| r("verify", v))
            .collect::<Result<_, _>>()?,
        retry: t.retry.clone(),
        on_failure: t.on_failure,
        loop_spec: t.loop_spec.clone(),
        verdict: t.verdict,
        publish: t.publish,
        acceptance,
        feedback: None,
        context_job: None,
        skipped: None,
    };
    Ok(PlannedTask {
        job_type: t.job_type,
        harness: t.harness.clone(),
        model: t.model.clone(),
        context,
        spec,
    })
}

/// The task ids by level: a task's level is one more than its deepest dependency's; each
/// level in file order.
fn levels(wf: &Workflow) -> Vec<Vec<&str>> {
    let mut level: HashMap<&str, usize> = HashMap::new();
    // The file was checked to have no cycle, so this settles in at most `tasks` passes.
    for _ in 0..wf.tasks.len() {
        for t in &wf.tasks {
            let l = t
                .depends_on
                .iter()
                .map(|d| level.get(d.as_str()).map_or(1, |l| l + 1))
                .max()
                .unwrap_or(0);
            level.insert(&t.id, l);
        }
    }
    let deepest = level.values().copied().max().unwrap_or(0);
    (0..=deepest)
        .map(|l| {
            wf.tasks
                .iter()
                .filter(|t| level[t.id.as_str()] == l)
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect()
}
