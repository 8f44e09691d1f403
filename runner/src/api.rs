//! The control protocol between `wf` and `wf-runner`, and its one interpreter.
//!
//! Messages are JSON in WebSocket text frames over the runner's Unix socket. The client opens
//! with [`Request::Hello`] carrying [`PROTOCOL_VERSION`]; the runner answers with its own
//! version and refuses other versions. Every request then gets exactly one [`Response`] with
//! the same `id`. [`dispatch`] executes a request against a store; the CLI calls it directly
//! when it holds the store itself, so both paths run the same code.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ops::{self, CreateRequest, JobSpec, OpError};
use wf_core::chain::AssignmentUpdate;
use wf_core::config::Config;
use wf_core::model::{AssignmentStatus, JobStatus};
use wf_store::Store;

/// Version of this protocol; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest message accepted on the socket, in bytes.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A request from `wf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// Opens the session.
    Hello {
        /// The client's protocol version.
        protocol: u32,
        /// Client name and version, for logs.
        client: String,
    },
    /// `wf create`.
    Create(CreateRequest),
    /// `wf insert-job`.
    #[serde(rename_all = "camelCase")]
    InsertJobs {
        /// Assignment id or prefix.
        assignment: String,
        /// The jobs (one group when several).
        jobs: Vec<JobSpec>,
        /// Insert after this job (id or prefix).
        after: Option<String>,
        /// The job running `wf`, if an agent does.
        caller: Option<String>,
    },
    /// `wf update-assignment`.
    #[serde(rename_all = "camelCase")]
    UpdateAssignment {
        /// Assignment id or prefix.
        assignment: String,
        /// New status.
        status: Option<AssignmentStatus>,
        /// Reason for blocking.
        reason: Option<String>,
        /// Artifacts text.
        artifacts: Option<String>,
        /// Decisions text.
        decisions: Option<String>,
        /// Note for the next PM.
        note: Option<String>,
        /// The job running `wf`, if an agent does.
        caller: Option<String>,
    },
    /// `wf assignments`.
    ListAssignments {
        /// Only this status.
        status: Option<AssignmentStatus>,
    },
    /// `wf assignment`.
    GetAssignment {
        /// Id or prefix.
        assignment: String,
    },
    /// `wf jobs`.
    ListJobs {
        /// Only this status.
        status: Option<JobStatus>,
    },
    /// `wf job`.
    GetJob {
        /// Id or prefix.
        job: String,
    },
    /// `wf cancel`.
    Cancel {
        /// Assignment or job id, or a prefix.
        target: String,
    },
    /// `wf retry`.
    Retry {
        /// Job id or prefix.
        job: String,
    },
    /// Streams the assignment (or every assignment) now and after each change, one response
    /// per document version, all with this request's id, until the client disconnects.
    Watch {
        /// Id or prefix; all assignments when absent.
        assignment: Option<String>,
    },
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// The result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Value>,
    /// The error, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// An error on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireError {
    /// [`OpError::kind`].
    pub kind: String,
    /// The message.
    pub message: String,
}

/// A request with its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// The runner's answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Welcome {
    /// The runner's protocol version.
    pub protocol: u32,
    /// The runner's id.
    pub runner_id: String,
    /// The runner's namespace.
    pub namespace: String,
}

fn to_value<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("API results always serialise")
}

/// Executes a request (other than `Hello`) against `store`.
///
/// `runner` is the id of the runner executing the request, when one does.
pub async fn dispatch(
    store: &Store,
    config: &Config,
    runner: Option<&str>,
    request: Request,
) -> Result<Value, OpError> {
    match request {
        Request::Hello { .. } => Err(OpError::Invalid("hello is only valid once, first".into())),
        Request::Create(req) => ops::create(store, config, &req).await.map(to_value),
        Request::InsertJobs {
            assignment,
            jobs,
            after,
            caller,
        } => ops::insert_jobs(
            store,
            config,
            &assignment,
            &jobs,
            after.as_deref(),
            caller.as_deref(),
        )
        .await
        .map(to_value),
        Request::UpdateAssignment {
            assignment,
            status,
            reason,
            artifacts,
            decisions,
            note,
            caller,
        } => {
            let update = AssignmentUpdate {
                status,
                reason,
                artifacts,
                decisions,
                note,
            };
            ops::update_assignment(store, config, &assignment, &update, caller.as_deref())
                .await
                .map(to_value)
        }
        Request::ListAssignments { status } => {
            ops::list_assignments(store, status).await.map(to_value)
        }
        Request::GetAssignment { assignment } => {
            ops::find_assignment(store, &assignment).await.map(to_value)
        }
        Request::ListJobs { status } => ops::list_jobs(store, status).await.map(to_value),
        Request::GetJob { job } => ops::job_detail(store, &job).await.map(to_value),
        Request::Cancel { target } => ops::cancel(store, &target, runner).await.map(to_value),
        Request::Retry { job } => ops::retry(store, &job).await.map(to_value),
        Request::Watch { .. } => Err(OpError::Unavailable(
            "watching needs a running wf-runner".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let env = Envelope {
            id: 7,
            request: Request::InsertJobs {
                assignment: "ab".into(),
                jobs: vec![],
                after: None,
                caller: Some("j".into()),
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        assert_eq!(
            text,
            r#"{"id":7,"request":{"op":"insertJobs","assignment":"ab","jobs":[],"after":null,"caller":"j"}}"#
        );
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), env);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for text in [
            r#"{"id":1,"request":{"op":"dropTables"}}"#,
            r#"{"id":1,"request":{"op":"getJob"}}"#,
            r#"{"id":"x","request":{"op":"getJob","job":"a"}}"#,
            r#"{"id":1,"request":{"op":"getJob","job":"a","extra":1}}"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<Envelope>(text).is_err(), "{text}");
        }
    }
}
