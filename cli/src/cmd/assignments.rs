//! `wf assignments`: the list.

use super::*;
use crate::args::AssignmentsArgs;

pub(crate) async fn run(backend: &mut Backend, args: AssignmentsArgs) -> Result<()> {
    let AssignmentsArgs { status, json } = args;
    let now = wf_core::clock::now_ms();
    let status = parse_enum::<AssignmentStatus>(status.as_deref())?;
    let docs: Vec<Assignment> = call(
        backend,
        api::ListAssignments {
            status,
            open: false,
        },
    )
    .await?;
    if json.json {
        print_json(&docs)?;
    } else {
        outln!("{}", output::assignments(&docs, now));
    }
    Ok(())
}
