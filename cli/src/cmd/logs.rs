//! `wf logs`: one attempt's transcript for humans, its events as JSON Lines, or its original
//! lines; `-f` follows a running attempt to its end.

use super::*;
use crate::args::LogsArgs;
use wf_core::live::{render, EventFrame, LiveKind};
use wf_runner::ops::OpError;

pub(crate) async fn run(
    backend: &mut Backend,
    config: &wf_core::config::Config,
    args: LogsArgs,
) -> Result<()> {
    let LogsArgs {
        job,
        follow,
        raw,
        attempt,
        json,
    } = args;
    let job = id_arg("the job id", &job)?;
    if attempt == Some(0) {
        return Err(Failure::usage("--attempt counts from 1"));
    }
    let request = api::Events {
        job,
        attempt,
        from: 0,
        follow,
        raw,
    };
    let mut frames = backend.events(config, request).await?;
    let mut view = View::default();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let frame = tokio::select! {
            _ = &mut interrupted => break,
            frame = frames.recv() => frame,
        };
        let Some(frame) = frame else {
            return Err(
                OpError::Unavailable("the event stream ended without its end".into()).into(),
            );
        };
        match frame? {
            EventFrame::End {} => break,
            frame if json => outln!(
                "{}",
                serde_json::to_string(&frame).expect("frames serialise")
            ),
            frame => view.show(&frame)?,
        }
    }
    view.finish()
}

/// The human view: text deltas joined on one line, everything else a line of its own.
#[derive(Default)]
struct View {
    in_delta: bool,
}

impl View {
    fn show(&mut self, frame: &EventFrame) -> Result<()> {
        match frame {
            EventFrame::Line(line) => outln!("{line}"),
            EventFrame::Missed(n) => {
                self.finish()?;
                outln!("… {n} event(s) missed: this reader fell behind");
            }
            EventFrame::Event(event) => {
                let delta = matches!(event.kind, LiveKind::Text { delta: true, .. });
                if !delta {
                    self.finish()?;
                }
                if let Some(text) = render(event) {
                    if delta {
                        out!("{text}");
                        self.in_delta = !text.ends_with('\n');
                    } else {
                        outln!("{text}");
                    }
                }
            }
            EventFrame::End {} => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if std::mem::take(&mut self.in_delta) {
            outln!("");
        }
        Ok(())
    }
}
