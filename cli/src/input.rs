//! Reading arguments: text that must be UTF-8, ids and prefixes, `$WF_ASSIGNMENT_ID` and
//! `$WF_JOB_ID`, enums, files or stdin, durations and job lists.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::Path;

use wf_core::ids;
use wf_runner::ops::JobSpec;

use crate::{Failure, Result};

pub(crate) fn text(arg: &str, value: &OsStr) -> Result<String> {
    value
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| Failure::usage(format!("{arg} is not valid UTF-8")))
}

pub(crate) fn opt_text(arg: &str, value: Option<&OsString>) -> Result<Option<String>> {
    value.map(|v| text(arg, v)).transpose()
}

pub(crate) fn id_arg(arg: &str, value: &OsStr) -> Result<String> {
    let s = text(arg, value)?;
    ids::parse_prefix(&s).map_err(|e| Failure::usage(format!("{arg}: {e}")))
}

/// The assignment argument, else `$WF_ASSIGNMENT_ID`.
pub(crate) fn assignment_arg(value: Option<&OsString>) -> Result<String> {
    match value {
        Some(v) => id_arg("the assignment id", v),
        None => match std::env::var_os("WF_ASSIGNMENT_ID").filter(|v| !v.is_empty()) {
            Some(v) => id_arg("$WF_ASSIGNMENT_ID", &v),
            None => Err(Failure::usage(
                "no assignment given (pass an id, or set WF_ASSIGNMENT_ID)",
            )),
        },
    }
}

/// The job running this `wf`, when an agent runs it.
pub(crate) fn caller() -> Result<Option<String>> {
    match std::env::var_os("WF_JOB_ID").filter(|v| !v.is_empty()) {
        Some(v) => Ok(Some(id_arg("$WF_JOB_ID", &v)?)),
        None => Ok(None),
    }
}

pub(crate) fn parse_enum<T: std::str::FromStr<Err = String>>(
    value: Option<&str>,
) -> Result<Option<T>> {
    value
        .map(|v| v.parse::<T>().map_err(Failure::usage))
        .transpose()
}

pub(crate) fn read_input(arg: &str, path: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    let res = if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|b| bytes = b)
    };
    res.map_err(|e| Failure::usage(format!("cannot read {arg} {}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| Failure::usage(format!("{arg} {} is not valid UTF-8", path.display())))
}

/// "90m", "4h", "3600s", "1500ms", or a number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<u64> {
    wf_core::clock::parse_duration(text).map_err(Failure::usage)
}

pub(crate) fn parse_jobs(arg: &str, text: &str) -> Result<Vec<JobSpec>> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Failure::usage(format!("{arg} is not valid JSON: {e}")))?;
    if !value.is_array() {
        return Err(Failure::usage(format!(
            "{arg} must be a JSON array of jobs, like [{{\"jobType\": \"review\", \"context\": \"...\"}}]"
        )));
    }
    let de = serde_path_to_error::deserialize::<_, Vec<JobSpec>>(value);
    de.map_err(|e| {
        Failure::usage(format!(
            "{arg}: job {}: {} (each job: {{\"jobType\", \"harness\"?, \"model\"?, \"context\"?}})",
            e.path(),
            e.inner()
        ))
    })
}
