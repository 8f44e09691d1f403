//! `wf workflow check|list|show` and the plan `wf create --workflow … --dry-run` prints:
//! workflow files need no store.

use std::collections::BTreeMap;
use std::ffi::OsString;

use serde_json::json;
use wf_core::config::Config;
use wf_core::workflow::{self, Gate, Plan, Workflow};

use crate::args::WorkflowCommand;
use crate::cmd::{outln, print_json, print_out};
use crate::input::text;
use crate::output::{one_line, plain_table};
use crate::{Failure, Result};

/// `--param name=value` arguments as a map; a repeated name is an error.
pub(crate) fn params(args: &[OsString]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        let a = text("--param", a)?;
        let Some((k, v)) = a.split_once('=') else {
            return Err(Failure::usage(format!(
                "--param {a:?}: write it as name=value"
            )));
        };
        if out.insert(k.trim().to_string(), v.to_string()).is_some() {
            return Err(Failure::usage(format!("--param {k} is given twice")));
        }
    }
    Ok(out)
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::usage(e.to_string())
}

/// Runs `wf workflow …`.
pub(crate) fn main(config_path: Option<&std::path::Path>, command: WorkflowCommand) -> Result<()> {
    match command {
        WorkflowCommand::Check(args) => check(args),
        WorkflowCommand::List(args) => {
            let config = crate::load_config(config_path)?;
            list(&config, args.json.json)
        }
        WorkflowCommand::Show(args) => {
            let config = crate::load_config(config_path)?;
            let wf = workflow::find(&args.name, &config.root).map_err(failed)?;
            if args.source {
                let text = source_text(&wf, &args.name)?;
                return print_out(&text);
            }
            if args.json.json {
                return print_json(&summary(&wf));
            }
            outln!(
                "workflow `{}` version {} ({}, hash {})",
                wf.name,
                wf.version,
                wf.source.describe(&wf.name),
                wf.hash
            );
            print_out(&describe(&wf))
        }
    }
}

/// `wf workflow check FILE [--param …]`.
fn check(args: crate::args::WorkflowCheckArgs) -> Result<()> {
    let wf = workflow::check_file(&args.file).map_err(failed)?;
    let given = params(&args.params)?;
    let needs_params = wf
        .params
        .values()
        .any(|p| p.required && p.default.is_none());
    let plan = if given.is_empty() && needs_params {
        None
    } else {
        Some(
            workflow::instantiate(&wf, &given, Some("(the north star)"))
                .map_err(|e| Failure::usage(format!("workflow {}: {e}", args.file.display())))?,
        )
    };
    if args.json.json {
        return print_json(&json!({
            "ok": true,
            "workflow": summary(&wf),
            "plan": plan,
        }));
    }
    outln!(
        "{}: workflow `{}` version {} is valid: {} tasks, {} parameters",
        args.file.display(),
        wf.name,
        wf.version,
        wf.tasks.len(),
        wf.params.len()
    );
    print_out(&describe(&wf))?;
    if let Some(plan) = plan {
        print_out(&render_plan(&plan, false))?;
    }
    Ok(())
}

/// `wf workflow list`.
fn list(config: &Config, json_out: bool) -> Result<()> {
    let all = workflow::list(&config.root);
    if json_out {
        let list: Vec<_> = all
            .iter()
            .map(|(name, found)| match found {
                Ok(wf) => summary(wf),
                Err(e) => json!({"name": name, "error": e.to_string()}),
            })
            .collect();
        return print_json(&list);
    }
    let rows = all
        .iter()
        .map(|(name, found)| match found {
            Ok(wf) => vec![
                name.clone(),
                wf.version.to_string(),
                wf.source.as_str().to_string(),
                one_line(wf.description.as_deref().unwrap_or(""), 70),
            ],
            Err(e) => vec![
                name.clone(),
                "-".into(),
                "INVALID".into(),
                one_line(&e.message, 70),
            ],
        })
        .collect();
    print_out(&plain_table(
        &["NAME", "VERSION", "FROM", "DESCRIPTION"],
        rows,
    ))
}

fn source_text(wf: &Workflow, name: &str) -> Result<String> {
    match &wf.source {
        workflow::Source::Builtin => Ok(workflow::BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.to_string())
            .unwrap_or_default()),
        workflow::Source::Project(p) | workflow::Source::User(p) | workflow::Source::File(p) => {
            std::fs::read_to_string(p)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", p.display())))
        }
    }
}

fn summary(wf: &Workflow) -> serde_json::Value {
    json!({
        "name": wf.name,
        "version": wf.version,
        "description": wf.description,
        "source": wf.source.as_str(),
        "file": wf.source.describe(&wf.name),
        "hash": wf.hash,
        "params": wf.params.iter().map(|(k, p)| (k.clone(), json!({
            "description": p.description, "required": p.required, "default": p.default,
            "enum": p.choices, "pattern": p.pattern,
        }))).collect::<serde_json::Map<_, _>>(),
        "tasks": wf.tasks.iter().map(|t| json!({
            "id": t.id, "type": t.job_type, "dependsOn": t.depends_on,
            "gate": t.gate.as_ref().map(gate_kind), "onFailure": t.on_failure,
            "verdict": t.verdict, "loop": t.loop_spec, "publish": t.publish,
        })).collect::<Vec<_>>(),
    })
}

fn gate_kind(g: &Gate) -> &'static str {
    match g {
        Gate::Human { .. } => "human",
        Gate::Command { .. } => "command",
    }
}

/// The parameters and tasks of a workflow, as text.
fn describe(wf: &Workflow) -> String {
    let mut out = String::new();
    if let Some(d) = &wf.description {
        out.push_str(&format!("{d}\n"));
    }
    if !wf.params.is_empty() {
        let rows = wf
            .params
            .iter()
            .map(|(k, p)| {
                let rule = match (&p.choices, &p.pattern) {
                    (Some(c), _) => format!("one of {}", c.join(", ")),
                    (None, Some(pat)) => format!("matches {pat}"),
                    (None, None) => String::new(),
                };
                let default = match (&p.default, p.required) {
                    (Some(d), _) => format!("{d:?}"),
                    (None, true) => "required".into(),
                    (None, false) => "\"\"".into(),
                };
                vec![
                    k.clone(),
                    default,
                    rule,
                    one_line(p.description.as_deref().unwrap_or(""), 60),
                ]
            })
            .collect();
        out.push_str(&plain_table(
            &["PARAMETER", "DEFAULT", "RULE", "MEANING"],
            rows,
        ));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    let rows = wf
        .tasks
        .iter()
        .map(|t| {
            let mut notes = Vec::new();
            if let Some(g) = &t.gate {
                notes.push(format!("{} gate", gate_kind(g)));
            }
            if t.verdict {
                notes.push("verdict".into());
            }
            if let Some(l) = &t.loop_spec {
                notes.push(format!("loop from {} (max {})", l.from, l.max));
            }
            if !t.verify.is_empty() {
                notes.push(format!("{} checks", t.verify.len()));
            }
            if let Some(r) = &t.retry {
                notes.push(format!("{} attempts", r.attempts));
            }
            if let Some(p) = t.publish {
                notes.push(format!("publishes {p}"));
            }
            vec![
                t.id.clone(),
                t.job_type.to_string(),
                t.depends_on.join(", "),
                t.on_failure.to_string(),
                notes.join(", "),
            ]
        })
        .collect();
    out.push_str(&plain_table(
        &["TASK", "TYPE", "AFTER", "ON FAILURE", "NOTES"],
        rows,
    ));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// A plan as text: the units in order, then each task's rendered context.
pub(crate) fn render_plan(plan: &Plan, contexts: bool) -> String {
    let mut out = format!(
        "\nplan: workflow `{}` version {} ({}, hash {}), north star: {}\n",
        plan.workflow.name,
        plan.workflow.version,
        plan.workflow.source,
        plan.workflow.hash,
        one_line(&plan.north_star, 100)
    );
    if !plan.workflow.params.is_empty() {
        let p: Vec<String> = plan
            .workflow
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!("parameters: {}\n", p.join(", ")));
    }
    if let Some(i) = &plan.forge_issue {
        out.push_str(&format!(
            "forge issue: {i} (read from the forge when created)\n"
        ));
    }
    if let Some(p) = &plan.forge_pull_request {
        out.push_str(&format!("pull request: #{p}\n"));
    }
    let rows = plan
        .units
        .iter()
        .enumerate()
        .flat_map(|(u, unit)| {
            let parallel = unit.len() > 1;
            unit.iter().map(move |t| {
                let what = match &t.spec.gate {
                    Some(Gate::Human { prompt }) => format!("asks: {}", one_line(prompt, 60)),
                    Some(Gate::Command { run, .. }) => format!("polls: {}", one_line(run, 60)),
                    None => one_line(&t.context, 60),
                };
                vec![
                    format!("{}{}", u + 1, if parallel { " ∥" } else { "" }),
                    t.spec.id.clone(),
                    t.job_type.to_string(),
                    t.harness.clone().unwrap_or_else(|| "(default)".into()),
                    t.spec.depends_on.join(", "),
                    what,
                ]
            })
        })
        .collect();
    out.push_str(&plain_table(
        &["UNIT", "TASK", "TYPE", "HARNESS", "AFTER", "WHAT"],
        rows,
    ));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("Units run in order (∥: the unit's tasks run in parallel); a PM reviews each unit that ran an agent.\n");
    if contexts {
        for t in plan.tasks().filter(|t| t.spec.gate.is_none()) {
            out.push_str(&format!(
                "\n--- task `{}` ({}) ---\n{}\n",
                t.spec.id,
                t.job_type,
                t.context.trim_end()
            ));
            if !t.spec.verify.is_empty() {
                out.push_str(&format!("checks: {}\n", t.spec.verify.join(" ; ")));
            }
        }
    }
    out
}

/// Finds and instantiates the workflow of `wf create --workflow`.
pub(crate) fn plan(
    config: &Config,
    name: &str,
    given: &BTreeMap<String, String>,
    north_star: Option<&str>,
) -> Result<Plan> {
    let wf = workflow::find(name, &config.root).map_err(failed)?;
    workflow::instantiate(&wf, given, north_star)
        .map_err(|e| Failure::usage(format!("workflow {}: {e}", wf.source.describe(&wf.name))))
}
