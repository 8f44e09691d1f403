//! `wf assignment`: one assignment and its chain.

use super::*;
use crate::args::AssignmentArgs;

pub(crate) async fn run(backend: &mut Backend, args: AssignmentArgs) -> Result<()> {
    let AssignmentArgs { assignment, json } = args;
    let now = wf_core::clock::now_ms();
    let assignment = assignment_arg(assignment.as_ref())?;
    let doc: Assignment = call(backend, api::GetAssignment { assignment }).await?;
    if json.json {
        print_json(&doc)?;
    } else {
        out!("{}", output::assignment(&doc, now));
    }
    Ok(())
}
