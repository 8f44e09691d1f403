//! `wf update-assignment`: status, artifacts, decisions, notes.

use super::*;
use crate::args::UpdateAssignmentArgs;

pub(crate) async fn run(backend: &mut Backend, args: UpdateAssignmentArgs) -> Result<()> {
    let UpdateAssignmentArgs {
        assignment,
        status,
        reason,
        artifacts,
        decisions,
        note,
        json,
    } = args;
    let request = api::UpdateAssignment {
        assignment: assignment_arg(assignment.as_ref())?,
        status: parse_enum::<AssignmentStatus>(status.as_deref())?,
        reason: opt_text("--reason", reason.as_ref())?,
        artifacts: opt_text("--artifacts", artifacts.as_ref())?,
        decisions: opt_text("--decisions", decisions.as_ref())?,
        note: opt_text("--note", note.as_ref())?,
        caller: caller()?,
    };
    let doc: Assignment = call(backend, request).await?;
    if json.json {
        print_json(&doc)?;
    } else {
        let status = match &doc.blocked_reason {
            Some(r) => format!("{} ({r})", doc.status),
            None => doc.status.to_string(),
        };
        outln!("{} {status}", doc.id);
    }
    Ok(())
}
