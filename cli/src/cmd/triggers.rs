//! `wf triggers`: the project's triggers, with their last and next firing.

use super::*;
use crate::args::TriggersArgs;
use crate::output::{ago, duration, one_line, plain_table};

pub(crate) async fn run(backend: &mut Backend, args: TriggersArgs) -> Result<()> {
    let list: Vec<wf_runner::triggers::TriggerStatus> = call(backend, api::Triggers {}).await?;
    if args.json.json {
        return print_json(&list);
    }
    if list.is_empty() {
        outln!("no triggers (add them to .wf/triggers.toml)");
        return Ok(());
    }
    let now = wf_core::clock::now_ms();
    let rows = list
        .iter()
        .map(|t| {
            let s = &t.state;
            let last = match (&s.last_fired, &s.last_assignment) {
                (Some(at), Some(aid)) => format!("{} ({aid})", ago(*at, now)),
                _ => "never".into(),
            };
            let next = match t.next {
                _ if !t.enabled => "disabled".into(),
                Some(at) if at > now => format!("in {}", duration(at - now)),
                Some(_) => "now".into(),
                None => "-".into(),
            };
            let mut counts = format!("{} fired", s.fired);
            if s.skipped > 0 {
                counts.push_str(&format!(", {} skipped", s.skipped));
            }
            if s.missed > 0 {
                counts.push_str(&format!(", {} missed", s.missed));
            }
            vec![
                t.id.clone(),
                one_line(&t.on, 50),
                t.workflow.clone(),
                last,
                next,
                counts,
                one_line(s.last_error.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    print_out(&plain_table(
        &[
            "TRIGGER", "ON", "WORKFLOW", "LAST", "NEXT", "COUNTS", "ERROR",
        ],
        rows,
    ))
}
