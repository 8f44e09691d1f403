//! `wf assignments`: the list.

use super::*;
use crate::args::AssignmentsArgs;

pub(crate) async fn run(backend: &mut Backend, args: AssignmentsArgs) -> Result<()> {
    let AssignmentsArgs { status, json } = args;
    let now = wf_core::clock::now_ms();
    let status = parse_enum::<AssignmentStatus>(status.as_deref())?;
    if json.json {
        let docs = backend
            .call_json(api::ListAssignmentsJson { status })
            .await?;
        return print_out(&crate::pretty::pretty_json(docs.get()));
    }
    let docs: Vec<Assignment> = call(
        backend,
        api::ListAssignments {
            status,
            open: false,
        },
    )
    .await?;
    outln!("{}", output::assignments(&docs, now));
    Ok(())
}
