//! Prompt templates: compiled in, overridable per repository, rendered strictly.
//!
//! Templates use minijinja with strict undefined variables, so a misspelt placeholder is an
//! error rather than an empty string. Values are inserted as data and never rendered again: a
//! north star containing `{{` stays literal. [`Templates::load`] reads overrides from disk;
//! [`render`] is pure.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior, Value};

use crate::model::{Assignment, Job, JobStatus, JobType};

/// Compiled-in templates, one per job type.
pub const BUILTIN: [(JobType, &str); 6] = [
    (JobType::Plan, include_str!("../../templates/plan.md")),
    (
        JobType::Implement,
        include_str!("../../templates/implement.md"),
    ),
    (JobType::Review, include_str!("../../templates/review.md")),
    (JobType::Uat, include_str!("../../templates/uat.md")),
    (
        JobType::Document,
        include_str!("../../templates/document.md"),
    ),
    (JobType::Pm, include_str!("../../templates/pm.md")),
];

/// Most bytes of one job result put into a prompt.
const MAX_RESULT_IN_PROMPT: usize = 100 * 1024;

/// A template problem.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// An override file could not be read.
    #[error("cannot read template {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A template does not parse or does not render.
    #[error("template {name}: {message}")]
    Template {
        /// Template name (`<type>.md`).
        name: String,
        /// What went wrong, with the line.
        message: String,
    },
}

/// The set of templates in use.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The compiled-in templates.
    pub fn builtin() -> Result<Self, PromptError> {
        Self::from_sources(BUILTIN.iter().map(|(t, src)| (*t, src.to_string())))
    }

    /// The compiled-in templates, each replaced by `<dir>/<type>.md` when that file exists.
    pub fn load(dir: &Path) -> Result<Self, PromptError> {
        let mut sources = Vec::new();
        for (job_type, builtin) in BUILTIN {
            let path = dir.join(format!("{job_type}.md"));
            let source = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => builtin.to_string(),
                Err(source) => {
                    return Err(PromptError::Read {
                        path: path.display().to_string(),
                        source,
                    })
                }
            };
            sources.push((job_type, source));
        }
        Self::from_sources(sources)
    }

    fn from_sources(
        sources: impl IntoIterator<Item = (JobType, String)>,
    ) -> Result<Self, PromptError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        for (job_type, source) in sources {
            let name = format!("{job_type}.md");
            env.add_template_owned(name.clone(), source)
                .map_err(|e| PromptError::Template {
                    name,
                    message: describe(&e),
                })?;
        }
        Ok(Self { env })
    }
}

fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!(
            "{} (line {line})",
            e.detail().unwrap_or(&e.kind().to_string())
        ),
        None => e.to_string(),
    }
}

/// A previous job's result, as shown in a prompt.
#[derive(Debug, Clone)]
pub struct PriorResult<'a> {
    /// The job.
    pub job: &'a Job,
    /// Its stored result text (empty when none).
    pub text: String,
}

/// Everything a prompt is made from.
#[derive(Debug, Clone)]
pub struct PromptInput<'a> {
    /// The assignment, as claimed.
    pub doc: &'a Assignment,
    /// The job to run.
    pub job: &'a Job,
    /// The job's context text.
    pub context: &'a str,
    /// For a PM: the results of the jobs it reviews. For others: of the last non-PM unit.
    pub previous: Vec<PriorResult<'a>>,
    /// How the agent runs wf: an absolute path (a login shell resets `PATH`), or `wf`.
    pub wf: &'a str,
}

/// The jobs whose results job `job` sees: a PM sees those it reviews; a workflow's task the
/// tasks it depends on (and, in a loop's later round, the result it answers); any other job
/// the last non-PM unit before it.
pub fn previous_jobs<'a>(doc: &'a Assignment, job: &Job) -> Vec<&'a Job> {
    if job.job_type == JobType::Pm {
        return job.reviews.iter().filter_map(|id| doc.job(id)).collect();
    }
    // A workflow's task sees the tasks it depends on, and the round it answers.
    if let Some(task) = &job.task {
        return task
            .depends_on
            .iter()
            .filter_map(|d| crate::chain::task_job(doc, d))
            .chain(task.feedback.iter().filter_map(|id| doc.job(id)))
            .collect();
    }
    let Some(idx) = doc.job_index(&job.id) else {
        return Vec::new();
    };
    let Some(last) = doc.jobs[..idx]
        .iter()
        .rposition(|j| j.job_type != JobType::Pm && j.status.is_finished())
    else {
        return Vec::new();
    };
    let group = doc.jobs[last].group_id.clone();
    let mut start = last;
    while group.is_some() && start > 0 && doc.jobs[start - 1].group_id == group {
        start -= 1;
    }
    doc.jobs[start..=last].iter().collect()
}

fn or_none(text: &str) -> String {
    if text.trim().is_empty() {
        "(none)".to_string()
    } else {
        text.to_string()
    }
}

fn format_results(previous: &[PriorResult<'_>]) -> String {
    if previous.is_empty() {
        return "(no previous results)".to_string();
    }
    previous
        .iter()
        .map(|p| {
            let j = p.job;
            let status = match (j.status, j.failure_reason) {
                (JobStatus::Failed, Some(reason)) => format!(
                    "FAILED ({reason}){}",
                    j.failure_detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                ),
                (s, _) => s.to_string(),
            };
            let mut text = p.text.trim().to_string();
            if text.len() > MAX_RESULT_IN_PROMPT {
                let mut cut = MAX_RESULT_IN_PROMPT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str("\n[… truncated; see `wf job ");
                text.push_str(&j.id);
                text.push_str("` for the full result]");
            }
            if text.is_empty() {
                text = "(no output)".to_string();
            }
            format!(
                "## {} job {} on {} — {}\n\n{}{}",
                j.job_type,
                j.id,
                j.harness,
                status,
                text,
                format_evidence(j)
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n---\n\n")
}

/// What the runner itself saw of a job: its commits and its verification steps, with the end
/// of a failed step's output.
fn format_evidence(j: &Job) -> String {
    let mut out = String::new();
    if let Some(c) = &j.commits {
        let short = |s: &str| s.chars().take(10).collect::<String>();
        if c.start == c.end {
            out.push_str(&format!(
                "\n\nCommits: none (the branch stayed at {})",
                short(&c.end)
            ));
        } else {
            out.push_str(&format!(
                "\n\nCommits: {}..{} (see `git log {}..{}`)",
                short(&c.start),
                short(&c.end),
                c.start,
                c.end
            ));
        }
    }
    if !j.checks.is_empty() {
        out.push_str("\n\n### Verification (run by wf after the job, not reported by the agent)\n");
        for c in &j.checks {
            out.push_str(&format!("\n{} — `{}`", c.summary(), c.command));
            if !c.passed {
                let tail: Vec<&str> = c.output_tail.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                out.push_str(&format!("\n\n```\n{}\n```\n", tail.join("\n")));
            }
        }
    }
    out
}

fn format_jobs(doc: &Assignment) -> String {
    if doc.jobs.is_empty() {
        return "(none)".to_string();
    }
    let archived = doc.archive.jobs as usize;
    let earlier = (archived > 0).then(|| {
        format!(
            "1.–{archived}. (finished, archived: `wf jobs --assignment {}` lists them)",
            doc.id
        )
    });
    let jobs = doc.jobs.iter().enumerate().map(|(i, j)| {
        let mut line = format!(
            "{}. {} {} ({}) — {}",
            archived + i + 1,
            j.id,
            j.job_type,
            j.harness,
            j.status
        );
        if let Some(reason) = j.failure_reason {
            line.push_str(&format!(" ({reason})"));
        }
        if let Some(t) = &j.task {
            line.push_str(&format!(" [task {}", t.id));
            if t.round > 1 {
                line.push_str(&format!(", round {}", t.round));
            }
            line.push(']');
        }
        if j.group_id.is_some() {
            line.push_str(" [parallel group]");
        }
        line
    });
    earlier
        .into_iter()
        .chain(jobs)
        .collect::<Vec<_>>()
        .join("\n")
}

/// For a PM: the workflow the assignment follows and the tasks still to run (empty when it
/// follows none).
fn workflow_text(doc: &Assignment) -> String {
    let Some(w) = &doc.workflow else {
        return String::new();
    };
    let left: Vec<String> = doc
        .jobs
        .iter()
        .filter(|j| j.status == JobStatus::Pending)
        .filter_map(|j| {
            let t = j.task.as_ref()?;
            let kind = if j.job_type == JobType::Gate {
                "gate".to_string()
            } else {
                j.job_type.to_string()
            };
            let deps = if t.depends_on.is_empty() {
                String::new()
            } else {
                format!(", after {}", t.depends_on.join(", "))
            };
            Some(format!("- `{}` ({kind}{deps}): job {}", t.id, j.id))
        })
        .collect();
    let params: Vec<String> = w.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "workflow `{}` version {} ({})\ntasks still to run, in order:\n{}",
        w.name,
        w.version,
        if params.is_empty() {
            "no parameters".to_string()
        } else {
            params.join(", ")
        },
        if left.is_empty() {
            "(none)".to_string()
        } else {
            left.join("\n")
        }
    )
}

/// Renders the prompt of `input.job`.
pub fn render(templates: &Templates, input: &PromptInput<'_>) -> Result<String, PromptError> {
    let job = input.job;
    let name = format!("{}.md", job.job_type);
    let template = templates
        .env
        .get_template(&name)
        .map_err(|e| PromptError::Template {
            name: name.clone(),
            message: describe(&e),
        })?;
    let reviewed_type = input
        .previous
        .iter()
        .map(|p| p.job.job_type)
        .find(|t| *t != JobType::Pm);
    let notes = input
        .doc
        .notes
        .iter()
        .map(|n| format!("- {}", n.text))
        .collect::<Vec<_>>()
        .join("\n");
    let ctx = minijinja::context! {
        NORTH_STAR => input.doc.north_star.as_str(),
        ARTIFACTS => or_none(&input.doc.artifacts),
        DECISIONS => or_none(&input.doc.decisions),
        CONTEXT => if input.context.trim().is_empty() { "(no specific context)" } else { input.context },
        PREVIOUS_RESULT => format_results(&input.previous),
        ASSIGNMENT_ID => input.doc.id.as_str(),
        JOB_ID => job.id.as_str(),
        WF => input.wf,
        CURRENT_JOB_ID => job.id.as_str(),
        GROUP_ID => job.group_id.as_deref().unwrap_or(""),
        JOB_TYPE => job.job_type.as_str(),
        NAMESPACE => input.doc.namespace.as_str(),
        HARNESS => job.harness.as_str(),
        JOBS => format_jobs(input.doc),
        NOTES => notes,
        REVIEWED_TYPE => reviewed_type.map_or("", JobType::as_str),
        REVIEW_FAILED => input.previous.iter().any(|p| p.job.status == JobStatus::Failed),
        REMINDER => job.pm_reminder,
        WORKFLOW => workflow_text(input.doc),
        BRANCH => input.doc.workspace.as_ref().map_or("", |w| w.branch.as_str()),
        BASE_BRANCH => input.doc.workspace.as_ref().map_or("", |w| w.base_branch.as_str()),
    };
    template
        .render(Value::from_serialize(&ctx))
        .map_err(|e| PromptError::Template {
            name,
            message: describe(&e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{self, Caller, NewJob, Position};
    use crate::model::FailureReason;

    fn doc_with(types: &[JobType]) -> Assignment {
        let mut doc =
            chain::new_assignment("a1".into(), "ns", "Make {{ it }} fast".into(), 10, false, 0);
        for (i, t) in types.iter().enumerate() {
            let job = NewJob {
                id: format!("j{i}"),
                job_type: *t,
                harness: "claude".into(),
                model: None,
                has_context: false,
                context_hash: None,
            };
            chain::insert_jobs(
                &mut doc,
                &[job],
                None,
                &Position::End,
                Caller::Human,
                None,
                0,
            )
            .unwrap();
        }
        doc
    }

    #[test]
    fn every_builtin_template_renders() {
        let templates = Templates::builtin().unwrap();
        let doc = doc_with(&[JobType::Plan]);
        for (t, _) in BUILTIN {
            let mut job = doc.jobs[0].clone();
            job.job_type = t;
            let input = PromptInput {
                doc: &doc,
                job: &job,
                context: "ctx",
                previous: vec![],
                wf: "wf",
            };
            let text = render(&templates, &input).unwrap();
            assert!(
                text.contains("Make {{ it }} fast"),
                "{t}: values are data, not templates"
            );
        }
    }

    #[test]
    fn the_pm_prompt_names_the_commands_and_the_failure() {
        let templates = Templates::builtin().unwrap();
        let mut doc = doc_with(&[JobType::Implement, JobType::Pm]);
        doc.jobs[0].status = JobStatus::Failed;
        doc.jobs[0].failure_reason = Some(FailureReason::Exit);
        doc.jobs[0].failure_detail = Some("ended with exit code 3".into());
        doc.jobs[1].reviews = vec!["j0".into()];
        doc.jobs[1].pm_reminder = true;
        doc.notes.push(crate::model::Note {
            text: "use sqlite".into(),
            at: 0,
        });
        let pm = doc.jobs[1].clone();
        let prev = previous_jobs(&doc, &pm);
        assert_eq!(prev.len(), 1);
        let input = PromptInput {
            doc: &doc,
            job: &pm,
            context: "",
            wf: "/opt/wf/bin/wf",
            previous: prev
                .into_iter()
                .map(|job| PriorResult {
                    job,
                    text: "partial work".into(),
                })
                .collect(),
        };
        let text = render(&templates, &input).unwrap();
        for needle in [
            "/opt/wf/bin/wf insert-job --type",
            "/opt/wf/bin/wf insert-job --jobs-file",
            "/opt/wf/bin/wf update-assignment --status complete",
            "/opt/wf/bin/wf update-assignment --status blocked --reason",
            "FAILED (exit): ended with exit code 3",
            "partial work",
            "use sqlite",
            "ended without a decision",
            "You are reviewing an **implementation**",
            "A job you are reviewing **failed**",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn workers_see_the_last_non_pm_unit() {
        let mut doc = doc_with(&[JobType::Plan, JobType::Pm, JobType::Implement]);
        doc.jobs[0].status = JobStatus::Complete;
        doc.jobs[1].status = JobStatus::Complete;
        let implement = doc.jobs[2].clone();
        let prev = previous_jobs(&doc, &implement);
        assert_eq!(
            prev.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["j0"]
        );
        let plan = doc.jobs[0].clone();
        assert!(previous_jobs(&doc, &plan).is_empty());
    }

    #[test]
    fn missing_variables_and_bad_overrides_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plan.md"), "Hello {{ NOT_A_VARIABLE }}").unwrap();
        let templates = Templates::load(dir.path()).unwrap();
        let doc = doc_with(&[JobType::Plan]);
        let input = PromptInput {
            doc: &doc,
            job: &doc.jobs[0],
            context: "",
            previous: vec![],
            wf: "wf",
        };
        let err = render(&templates, &input).unwrap_err().to_string();
        assert!(
            err.contains("plan.md") && err.contains("undefined"),
            "{err}"
        );

        std::fs::write(dir.path().join("review.md"), "{% if %}").unwrap();
        let err = Templates::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("review.md"), "{err}");

        // An override is used.
        std::fs::write(dir.path().join("review.md"), "Review {{ NORTH_STAR }}").unwrap();
        let templates = Templates::load(dir.path()).unwrap();
        let mut job = doc.jobs[0].clone();
        job.job_type = JobType::Review;
        let input = PromptInput {
            doc: &doc,
            job: &job,
            context: "",
            previous: vec![],
            wf: "wf",
        };
        assert_eq!(
            render(&templates, &input).unwrap(),
            "Review Make {{ it }} fast"
        );
    }
}
