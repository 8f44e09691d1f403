//! Custom harnesses: a command run as configured, speaking one of the known stream formats (or
//! plain text). The prompt goes on stdin, or replaces `{prompt}` in an argument; `{model}` and
//! `WF_MODEL` carry the model.

use super::{CommandSpec, PromptTooLong, MAX_ARG_PROMPT};

/// Fills in `spec` (which carries the prompt on stdin) for a custom command.
pub(super) fn fill(
    spec: &mut CommandSpec,
    args: &[String],
    model: Option<&str>,
    prompt: &str,
) -> Result<(), PromptTooLong> {
    if let Some(m) = model {
        spec.env.insert("WF_MODEL".into(), m.to_string());
    }
    let mut args = args.to_vec();
    if args.iter().any(|a| a.contains("{prompt}")) {
        if prompt.len() > MAX_ARG_PROMPT {
            return Err(PromptTooLong(prompt.len()));
        }
        for a in &mut args {
            *a = a.replace("{prompt}", prompt);
        }
        spec.stdin = None;
    }
    for a in &mut args {
        *a = a.replace("{model}", model.unwrap_or(""));
    }
    spec.args = args;
    Ok(())
}
