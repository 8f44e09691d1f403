//! `wf cancel`: stop running jobs and block the assignment.

use super::*;
use crate::args::CancelArgs;

pub(crate) async fn run(backend: &mut Backend, args: CancelArgs) -> Result<()> {
    let CancelArgs { id, json } = args;
    let target = id_arg("the id", &id)?;
    let doc: Assignment = call(backend, api::Cancel { target }).await?;
    if json.json {
        print_json(&doc)?;
    } else {
        outln!(
            "{} {}",
            doc.id,
            doc.blocked_reason.as_deref().unwrap_or(doc.status.as_str())
        );
        if doc.lease.is_some() {
            eprintln!("the runner holding it stops the agent now");
        }
    }
    Ok(())
}
