//! `wf queue`: what runs, what may run, what waits.

use super::*;
use crate::args::QueueArgs;

pub(crate) async fn run(backend: &mut Backend, args: QueueArgs) -> Result<()> {
    let QueueArgs { json } = args;
    let now = wf_core::clock::now_ms();
    let docs: Vec<Assignment> = call(
        backend,
        api::ListAssignments {
            status: None,
            open: true,
        },
    )
    .await?;
    let view = ops::queue_view(docs);
    if json.json {
        print_json(&view)?;
    } else {
        outln!("{}", output::queue(&view, now));
    }
    Ok(())
}
