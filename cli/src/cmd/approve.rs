//! `wf approve`: a human passes the gate an assignment waits at.

use super::*;
use crate::args::ApproveArgs;

pub(crate) async fn run(backend: &mut Backend, args: ApproveArgs) -> Result<()> {
    let ApproveArgs {
        assignment,
        note,
        json,
    } = args;
    let request = api::Approve {
        assignment: assignment_arg(assignment.as_ref())?,
        note: opt_text("--note", note.as_ref())?,
        caller: caller()?,
    };
    let doc: Assignment = call(backend, request).await?;
    if json.json {
        print_json(&doc)?;
    } else {
        outln!("{} {}", doc.id, doc.status);
    }
    Ok(())
}
