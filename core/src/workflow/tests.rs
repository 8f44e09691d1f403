//! Tests of workflow files: every malformed case refused with a message naming it, rendering
//! with values as data, the units of a DAG, verdicts, and a property test of the order.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::model::JobType;

fn wf(text: &str) -> Result<Workflow, WorkflowError> {
    parse(text, "test.toml", Source::Builtin)
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const DIAMOND: &str = r#"
workflow = "diamond"
version = 2
[params.module]
description = "the module"
required = true
pattern = "[a-z]+"
[params.risk]
enum = ["low", "high"]
default = "low"
[[tasks]]
id = "a"
type = "plan"
instructions = "Plan {{ north_star }} in {{ params.module }} ({{ params.risk }})."
acceptance = ["a plan for {{ params.module }}"]
[[tasks]]
id = "d"
type = "document"
depends_on = ["b", "c"]
instructions = "Document."
[[tasks]]
id = "b"
type = "implement"
depends_on = ["a"]
instructions = "Build."
verify = ["make test MODULE={{ params.module }}"]
[[tasks]]
id = "c"
type = "uat"
depends_on = ["a"]
instructions = "Try it."
on_failure = "block"
[[tasks]]
id = "ok"
depends_on = ["a"]
gate = { kind = "human", prompt = "Ship {{ params.module }}?" }
"#;

#[test]
fn every_builtin_workflow_checks_out() {
    for (name, text) in BUILTIN {
        let w = parse(text, name, Source::Builtin).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.name, name);
    }
    let feature = find("feature", std::path::Path::new("/nonexistent")).unwrap();
    assert_eq!(feature.source, Source::Builtin);
    let review = feature.tasks.iter().find(|t| t.id == "review").unwrap();
    let l = review.loop_spec.as_ref().unwrap();
    assert_eq!(
        (l.tasks.as_slice(), l.max),
        (&["implement".to_string(), "review".to_string()][..], 3)
    );
}

#[test]
fn a_diamond_runs_level_by_level_with_gates_alone() {
    let w = wf(DIAMOND).unwrap();
    let plan = instantiate(&w, &params(&[("module", "auth")]), Some("Add login")).unwrap();
    let units: Vec<Vec<&str>> = plan
        .units
        .iter()
        .map(|u| u.iter().map(|t| t.spec.id.as_str()).collect())
        .collect();
    assert_eq!(units, [vec!["a"], vec!["ok"], vec!["b", "c"], vec!["d"]]);
    let a = &plan.units[0][0];
    assert_eq!(
        a.context,
        "Plan Add login in auth (low).\n\nAcceptance criteria (the task is done when all hold):\n- a plan for auth\n"
    );
    assert_eq!(plan.units[1][0].job_type, JobType::Gate);
    assert_eq!(
        plan.units[1][0].spec.gate,
        Some(Gate::Human {
            prompt: "Ship auth?".into()
        })
    );
    assert_eq!(plan.units[2][0].spec.verify, ["make test MODULE=auth"]);
    assert_eq!(plan.units[2][1].spec.on_failure, OnFailure::Block);
    assert_eq!(plan.workflow.version, 2);
    assert_eq!(plan.workflow.params["risk"], "low");
    assert_eq!(plan.workflow.hash.len(), 16);
}

#[test]
fn values_go_in_as_data_and_are_never_rendered_again() {
    let w = wf(DIAMOND).unwrap();
    let plan = instantiate(
        &w,
        &params(&[("module", "auth")]),
        Some("Say {{ params.module }} {% raw %}"),
    )
    .unwrap();
    assert!(plan.units[0][0]
        .context
        .starts_with("Plan Say {{ params.module }} {% raw %} in auth"));
}

#[test]
fn parameters_are_bound_and_checked_by_name() {
    let w = wf(DIAMOND).unwrap();
    let err = |p: &[(&str, &str)]| instantiate(&w, &params(p), Some("x")).unwrap_err();
    let missing = err(&[]);
    assert!(
        missing.contains("missing parameter `module` (the module)"),
        "{missing}"
    );
    let unknown = err(&[("module", "auth"), ("modul", "x")]);
    assert!(
        unknown.contains("unknown parameter `modul`") && unknown.contains("module, risk"),
        "{unknown}"
    );
    let pattern = err(&[("module", "Auth 2")]);
    assert!(
        pattern.contains("parameter `module`: \"Auth 2\" does not match its pattern [a-z]+"),
        "{pattern}"
    );
    let choice = err(&[("module", "auth"), ("risk", "medium")]);
    assert!(
        choice.contains("\"medium\" is not one of low, high"),
        "{choice}"
    );
    let no_star = instantiate(&w, &params(&[("module", "auth")]), None).unwrap_err();
    assert!(no_star.contains("a north star is needed"), "{no_star}");
    let bugfix = find("bugfix", std::path::Path::new("/nonexistent")).unwrap();
    let plan = instantiate(&bugfix, &params(&[("bug", "it crashes")]), None).unwrap();
    assert_eq!(plan.north_star, "Fix the bug: it crashes");
}

/// `DIAMOND` with `from` replaced by `to` (which must be there).
fn diamond_with(from: &str, to: &str) -> String {
    assert!(DIAMOND.contains(from), "{from}");
    DIAMOND.replacen(from, to, 1)
}

#[test]
// Long: a table of malformed files, one per rule, each with the words its error must hold.
fn malformed_files_are_refused_naming_the_problem() {
    let cases: Vec<(String, &str)> = vec![
        (
            diamond_with("version = 2", "version = 2\ncolour = 1"),
            "line 4: unknown field `colour`",
        ),
        (
            diamond_with("id = \"b\"", "id = \"a\""),
            "task id `a` is used twice",
        ),
        (
            diamond_with("depends_on = [\"b\", \"c\"]", "depends_on = [\"b\", \"x\"]"),
            "depends_on names `x`, which is no task",
        ),
        (
            diamond_with(
                "depends_on = [\"a\"]\ninstructions = \"Build.\"",
                "depends_on = [\"a\", \"d\"]\ninstructions = \"Build.\"",
            ),
            "cycle: d → b → d (each depends on the next)",
        ),
        (
            diamond_with("{{ params.risk }}", "{{ params.rsik }}"),
            "uses `params.rsik`, which is not defined",
        ),
        (
            diamond_with("Document.", "Document {{ issue }}."),
            "uses `issue`, which is not defined",
        ),
        (
            diamond_with("Document.", "Document {{ params.module "),
            "task `d`: instructions: ",
        ),
        (
            diamond_with("default = \"low\"", "default = \"mid\""),
            "\"mid\" is not one of low, high (its default)",
        ),
        (
            diamond_with("pattern = \"[a-z]+\"", "pattern = \"[a-z\""),
            "is not a regular expression",
        ),
        (
            diamond_with("type = \"plan\"", "type = \"pm\""),
            "the PM runs by itself",
        ),
        (
            diamond_with("type = \"plan\"", "type = \"deploy\""),
            "unknown job type \"deploy\"",
        ),
        (
            diamond_with("on_failure = \"block\"", "on_failure = \"ignore\""),
            "on_failure: unknown onfailure \"ignore\"",
        ),
        (
            diamond_with("prompt = \"Ship {{ params.module }}?\"", "run = \"true\""),
            "a human gate takes only a prompt",
        ),
        (
            diamond_with(
                "gate = { kind = \"human\",",
                "instructions = \"x\"\ngate = { kind = \"human\",",
            ),
            "a gate runs no agent, so it takes no instructions",
        ),
        (
            diamond_with("instructions = \"Try it.\"", ""),
            "task `c`: instructions are empty",
        ),
        (
            diamond_with(
                "on_failure = \"block\"",
                "verdict = true\nloop = { from = \"a\" }",
            ),
            "missing field `max`",
        ),
        (
            diamond_with(
                "on_failure = \"block\"",
                "verdict = true\nloop = { from = \"a\", max = 11 }",
            ),
            "loop.max: 11 is not 1 to 10",
        ),
        (
            diamond_with("on_failure = \"block\"", "loop = { from = \"a\", max = 3 }"),
            "needs verdict = true",
        ),
        (
            diamond_with(
                "on_failure = \"block\"",
                "verdict = true\nloop = { from = \"b\", max = 3 }",
            ),
            "loop.from `b` is not a task it depends on",
        ),
        (
            diamond_with(
                "on_failure = \"block\"",
                "retry = { attempts = 2, on = [\"cancelled\"] }",
            ),
            "on: `cancelled` is never retried",
        ),
        (
            diamond_with("on_failure = \"block\"", "retry = { attempts = 0 }"),
            "attempts: 0 is not 1 to 10",
        ),
        (
            diamond_with("workflow = \"diamond\"", "workflow = \"Dia mond\""),
            "workflow name \"Dia mond\"",
        ),
        ("workflow = \"x\"\nversion = 1\n".to_string(), "no tasks"),
    ];
    for (text, want) in cases {
        let err = wf(&text).expect_err(want).to_string();
        assert!(err.starts_with("workflow test.toml: "), "{err}");
        assert!(err.contains(want), "want {want:?} in: {err}");
    }
}

#[test]
fn verdicts_are_read_from_the_last_verdict_line() {
    assert_eq!(verdict("fine\nVERDICT: pass"), Some(true));
    assert_eq!(verdict("**Verdict: FAIL** — tests missing"), Some(false));
    assert_eq!(verdict("VERDICT: fail\n...\nverdict: pass\n"), Some(true));
    assert_eq!(verdict("I think it passes"), None);
    assert_eq!(verdict("VERDICT: maybe"), None);
    assert_eq!(verdict(""), None);
}

/// A random DAG in the file: task i may depend on any earlier task; the file lists the tasks
/// in a shuffled order.
fn dag() -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<usize>)> {
    (1usize..14)
        .prop_flat_map(|n| {
            let deps = (0..n)
                .map(|i| proptest::collection::vec(0..i.max(1), 0..=i.min(3)))
                .collect::<Vec<_>>();
            (deps, Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
        .prop_map(|(deps, order)| {
            let deps = deps
                .into_iter()
                .enumerate()
                .map(|(i, d)| {
                    let mut d: Vec<usize> = d.into_iter().filter(|x| *x < i).collect();
                    d.sort_unstable();
                    d.dedup();
                    d
                })
                .collect();
            (deps, order)
        })
}

proptest! {
    #[test]
    fn any_valid_dag_instantiates_in_an_order_that_respects_every_dependency((deps, order) in dag()) {
        let mut text = String::from("workflow = \"g\"\nversion = 1\n");
        for &i in &order {
            let d: Vec<String> = deps[i].iter().map(|x| format!("\"t{x}\"")).collect();
            text.push_str(&format!(
                "[[tasks]]\nid = \"t{i}\"\ntype = \"implement\"\ninstructions = \"do {i}\"\ndepends_on = [{}]\n",
                d.join(", ")
            ));
        }
        let w = wf(&text).unwrap();
        let plan = instantiate(&w, &BTreeMap::new(), Some("go")).unwrap();
        let position: BTreeMap<String, usize> = plan
            .units
            .iter()
            .enumerate()
            .flat_map(|(u, unit)| unit.iter().map(move |t| (t.spec.id.clone(), u)))
            .collect();
        prop_assert_eq!(position.len(), deps.len());
        for (i, d) in deps.iter().enumerate() {
            for x in d {
                // Strictly earlier: a task never shares a unit with what it depends on.
                let (before, after) = (position[&format!("t{x}")], position[&format!("t{i}")]);
                prop_assert!(before < after, "t{} (unit {}) depends on t{} (unit {})", i, after, x, before);
            }
        }
    }
}
