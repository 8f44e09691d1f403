//! The control protocol between `wf` and `wf-runner`, and its one interpreter.
//!
//! Messages are JSON in WebSocket text frames over the runner's Unix socket. The client opens
//! with [`Request::Hello`] carrying [`PROTOCOL_VERSION`]; the runner answers with its own
//! version and refuses other versions. Every request then gets exactly one [`Response`] with
//! the same `id`. [`dispatch`] executes a request against a store; the CLI calls it directly
//! when it holds the store itself, so both paths run the same code.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ops::{self, CreateRequest, InsertResult, JobDetail, JobSpec, OpError};
use wf_core::chain::AssignmentUpdate;
use wf_core::config::Config;
use wf_core::model::{Assignment, AssignmentStatus, ErrorKind, Job, JobStatus};
use wf_store::Store;

/// Version of this protocol; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest message accepted on the socket, in bytes.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A request from `wf`. Each variant holds one request type; [`Call`] ties it to the type of
/// its answer, so callers get typed results and the interpreter cannot answer with another type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
#[expect(
    clippy::large_enum_variant,
    reason = "one request per message, decoded once and consumed; boxing would only obscure the wire types"
)]
pub enum Request {
    /// Opens the session.
    Hello(Hello),
    /// `wf create`.
    Create(CreateRequest),
    /// `wf insert-job`.
    InsertJobs(InsertJobs),
    /// `wf update-assignment`.
    UpdateAssignment(UpdateAssignment),
    /// `wf assignments`.
    ListAssignments(ListAssignments),
    /// `wf assignments --json`: the list as one JSON array of the documents as stored.
    ListAssignmentsJson(ListAssignmentsJson),
    /// `wf assignment`.
    GetAssignment(GetAssignment),
    /// `wf jobs`.
    ListJobs(ListJobs),
    /// `wf job`.
    GetJob(GetJob),
    /// `wf cancel`.
    Cancel(Cancel),
    /// `wf retry`.
    Retry(Retry),
    /// `wf approve`: passes the human gate an assignment waits at.
    Approve(Approve),
    /// `wf skip-job`: a pending job will not run.
    SkipJob(SkipJob),
    /// `wf triggers`: the project's triggers with their last and next firing.
    Triggers(Triggers),
    /// Streams the assignment (or every assignment) now and after each change, one response
    /// per document version, all with this request's id, until the client disconnects.
    Watch(Watch),
    /// `wf doctor`: how many documents the store holds, and which it cannot read.
    CheckStore(CheckStore),
    /// `wf pr`: push the branch and open (or find) the assignment's pull request.
    OpenPullRequest(OpenPullRequest),
    /// `wf rollback`.
    Rollback(crate::rollback::RollbackRequest),
    /// `wf logs`: one attempt's live events (or transcript lines), replayed then followed;
    /// one response per [`EventFrame`](wf_core::live::EventFrame), all with this request's
    /// id, the last one `end`.
    Events(Events),
}

/// What a request needs to be executed: the store, the configuration requests are interpreted
/// with, and the runner executing it (when one does).
#[derive(Clone, Copy)]
pub struct Exec<'a> {
    /// The store.
    pub store: &'a Store,
    /// The configuration.
    pub config: &'a Config,
    /// The id of the runner executing the request, when one does.
    pub runner: Option<&'a str>,
}

/// A request type and the type of its answer.
pub trait Call: Into<Request> + Send {
    /// What a successful call returns.
    type Output: Serialize + DeserializeOwned + Send;

    /// Executes the request.
    fn execute(
        self,
        exec: Exec<'_>,
    ) -> impl std::future::Future<Output = Result<Self::Output, OpError>> + Send;
}

macro_rules! request_types {
    ($($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* })+) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            pub struct $name {
                $($(#[$fmeta])* pub $field: $ty,)*
            }

            impl From<$name> for Request {
                fn from(r: $name) -> Request {
                    Request::$name(r)
                }
            }
        )+
    };
}

request_types! {
    /// Opens the session: answered by the socket server with a [`Welcome`].
    Hello {
        /// The client's protocol version.
        protocol: u32,
        /// Client name and version, for logs.
        client: String,
    }
    /// `wf insert-job`.
    InsertJobs {
        /// Assignment id or prefix.
        assignment: String,
        /// The jobs (one group when several).
        jobs: Vec<JobSpec>,
        /// Insert after this job (id or prefix).
        after: Option<String>,
        /// The job running `wf`, if an agent does.
        caller: Option<String>,
    }
    /// `wf update-assignment`.
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
    }
    /// `wf assignments`.
    ListAssignments {
        /// Only this status.
        status: Option<AssignmentStatus>,
        /// Only open assignments (not complete, or with a lease or notices left).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        open: bool,
    }
    /// `wf assignments --json`.
    ListAssignmentsJson {
        /// Only this status.
        status: Option<AssignmentStatus>,
    }
    /// `wf assignment`.
    GetAssignment {
        /// Id or prefix.
        assignment: String,
    }
    /// `wf jobs`.
    ListJobs {
        /// Only this status.
        status: Option<JobStatus>,
        /// Only this assignment (id or prefix); its archived jobs included.
        #[serde(default)]
        assignment: Option<String>,
    }
    /// `wf job`.
    GetJob {
        /// Id or prefix.
        job: String,
    }
    /// `wf cancel`.
    Cancel {
        /// Assignment or job id, or a prefix.
        target: String,
    }
    /// `wf retry`.
    Retry {
        /// Job id or prefix.
        job: String,
    }
    /// `wf approve`.
    Approve {
        /// Assignment id or prefix.
        assignment: String,
        /// What the human says; it reaches the next task and the next PM.
        note: Option<String>,
        /// The job running `wf`, if an agent does (refused: only humans pass gates).
        caller: Option<String>,
    }
    /// `wf triggers`.
    Triggers {}
    /// `wf skip-job`.
    SkipJob {
        /// Job id or prefix.
        job: String,
        /// Why it is not needed.
        reason: String,
        /// The job running `wf`, if an agent does.
        caller: Option<String>,
    }
    /// Streams versions of one assignment, or of all.
    Watch {
        /// Id or prefix; all assignments when absent.
        assignment: Option<String>,
    }
    /// Checks the documents of the namespace.
    CheckStore {}
    /// One attempt's events, or its transcript lines.
    Events {
        /// Job id or prefix.
        job: String,
        /// The attempt (the latest when absent).
        #[serde(default)]
        attempt: Option<u32>,
        /// The first event wanted.
        #[serde(default)]
        from: u64,
        /// Go on with new events until the attempt ends.
        #[serde(default)]
        follow: bool,
        /// The transcript's lines instead of events.
        #[serde(default)]
        raw: bool,
    }
    /// Pushes an assignment's branch and opens its pull request, or finds the open one.
    OpenPullRequest {
        /// Id or prefix.
        assignment: String,
    }
}

impl From<crate::rollback::RollbackRequest> for Request {
    fn from(r: crate::rollback::RollbackRequest) -> Request {
        Request::Rollback(r)
    }
}

impl Call for crate::rollback::RollbackRequest {
    type Output = crate::rollback::RollbackReport;
    async fn execute(self, x: Exec<'_>) -> Result<Self::Output, OpError> {
        crate::rollback::rollback(x.store, x.config, &self, x.runner).await
    }
}

impl Call for OpenPullRequest {
    type Output = wf_core::model::PullRequestRef;
    async fn execute(self, x: Exec<'_>) -> Result<Self::Output, OpError> {
        let doc = ops::find_assignment(x.store, &self.assignment).await?;
        crate::forge::deliver(x.config, x.store, &doc.id)
            .await
            .map_err(OpError::Unavailable)
    }
}

impl From<CreateRequest> for Request {
    fn from(r: CreateRequest) -> Request {
        Request::Create(r)
    }
}

impl Call for Hello {
    type Output = Welcome;
    async fn execute(self, _: Exec<'_>) -> Result<Welcome, OpError> {
        Err(OpError::Invalid("hello is only valid once, first".into()))
    }
}

impl Call for CreateRequest {
    type Output = Assignment;
    async fn execute(self, x: Exec<'_>) -> Result<Assignment, OpError> {
        ops::create(x.store, x.config, &self).await
    }
}

impl Call for InsertJobs {
    type Output = InsertResult;
    async fn execute(self, x: Exec<'_>) -> Result<InsertResult, OpError> {
        let (after, caller) = (self.after.as_deref(), self.caller.as_deref());
        ops::insert_jobs(
            x.store,
            x.config,
            &self.assignment,
            &self.jobs,
            after,
            caller,
        )
        .await
    }
}

impl Call for UpdateAssignment {
    type Output = Assignment;
    async fn execute(self, x: Exec<'_>) -> Result<Assignment, OpError> {
        let update = AssignmentUpdate {
            status: self.status,
            reason: self.reason,
            artifacts: self.artifacts,
            decisions: self.decisions,
            note: self.note,
        };
        let caller = self.caller.as_deref();
        ops::update_assignment(x.store, x.config, &self.assignment, &update, caller).await
    }
}

impl Call for ListAssignments {
    type Output = Vec<Assignment>;
    async fn execute(self, x: Exec<'_>) -> Result<Vec<Assignment>, OpError> {
        if self.open {
            let mut docs = x.store.list_open().await?;
            docs.retain(|d| self.status.is_none_or(|s| d.status == s));
            docs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            return Ok(docs);
        }
        ops::list_assignments(x.store, self.status).await
    }
}

impl Call for ListAssignmentsJson {
    type Output = Box<RawValue>;
    async fn execute(self, x: Exec<'_>) -> Result<Box<RawValue>, OpError> {
        ops::list_assignments_json(x.store, self.status).await
    }
}

impl Call for GetAssignment {
    type Output = Assignment;
    async fn execute(self, x: Exec<'_>) -> Result<Assignment, OpError> {
        ops::find_assignment(x.store, &self.assignment).await
    }
}

impl Call for ListJobs {
    type Output = Vec<Job>;
    async fn execute(self, x: Exec<'_>) -> Result<Vec<Job>, OpError> {
        ops::list_jobs(x.store, self.status, self.assignment.as_deref()).await
    }
}

impl Call for GetJob {
    type Output = JobDetail;
    async fn execute(self, x: Exec<'_>) -> Result<JobDetail, OpError> {
        ops::job_detail(x.store, &self.job).await
    }
}

impl Call for Cancel {
    type Output = Assignment;
    async fn execute(self, x: Exec<'_>) -> Result<Assignment, OpError> {
        ops::cancel(x.store, &self.target, x.runner).await
    }
}

impl Call for Retry {
    type Output = Assignment;
    async fn execute(self, x: Exec<'_>) -> Result<Assignment, OpError> {
        ops::retry(x.store, &self.job).await
    }
}

impl Call for Approve {
    type Output = Assignment;
    async fn execute(self, x: Exec<'_>) -> Result<Assignment, OpError> {
        ops::approve(
            x.store,
            &self.assignment,
            self.note.as_deref(),
            self.caller.as_deref(),
        )
        .await
    }
}

impl Call for SkipJob {
    type Output = Assignment;
    async fn execute(self, x: Exec<'_>) -> Result<Assignment, OpError> {
        ops::skip_job(x.store, &self.job, &self.reason, self.caller.as_deref()).await
    }
}

impl Call for Triggers {
    type Output = Vec<crate::triggers::TriggerStatus>;
    async fn execute(self, x: Exec<'_>) -> Result<Self::Output, OpError> {
        let triggers = crate::triggers::load(x.config).map_err(OpError::Invalid)?;
        let engine = crate::triggers::Engine::new(x.store.clone(), x.config.clone(), triggers)
            .map_err(OpError::Invalid)?;
        Ok(engine.status(wf_core::clock::now_ms()).await?)
    }
}

impl Call for Watch {
    type Output = Assignment;
    async fn execute(self, _: Exec<'_>) -> Result<Assignment, OpError> {
        Err(OpError::Unavailable(
            "watching needs a running wf-runner".into(),
        ))
    }
}

impl Call for Events {
    type Output = wf_core::live::EventFrame;
    async fn execute(self, _: Exec<'_>) -> Result<Self::Output, OpError> {
        Err(OpError::Unavailable(
            "events are streamed by a running wf-runner".into(),
        ))
    }
}

impl Call for CheckStore {
    type Output = ops::StoreCheck;
    async fn execute(self, x: Exec<'_>) -> Result<ops::StoreCheck, OpError> {
        ops::check_store(x.store).await
    }
}

/// The answer to one request: its id, and either the result or the error. On the wire this is
/// `{"id": 1, "ok": …}` or `{"id": 1, "error": {"kind": …, "message": …}}`. The result is kept
/// as the JSON it is sent as: serialised once by the runner, decoded once into the caller's
/// type (a list of assignments is megabytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// What came of it.
    pub outcome: Outcome,
}

/// A result or an error, never both, never neither.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The result, as JSON.
    Ok(Box<RawValue>),
    /// The error.
    Err(WireError),
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Outcome::Ok(a), Outcome::Ok(b)) => a.get() == b.get(),
            (Outcome::Err(a), Outcome::Err(b)) => a == b,
            _ => false,
        }
    }
}

impl Serialize for Response {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            id: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            ok: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a WireError>,
        }
        let (ok, error) = match &self.outcome {
            Outcome::Ok(v) => (Some(&**v), None),
            Outcome::Err(e) => (None, Some(e)),
        };
        Wire {
            id: self.id,
            ok,
            error,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// `ok` present, even as `null` (a result of `()`).
        fn present<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Box<RawValue>>, D::Error> {
            Box::<RawValue>::deserialize(d).map(Some)
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            id: u64,
            #[serde(default, deserialize_with = "present")]
            ok: Option<Box<RawValue>>,
            #[serde(default)]
            error: Option<WireError>,
        }
        let w = Wire::deserialize(d)?;
        let outcome = match (w.ok, w.error) {
            (Some(v), None) => Outcome::Ok(v),
            (None, Some(e)) => Outcome::Err(e),
            _ => {
                return Err(serde::de::Error::custom(
                    "a response holds exactly one of ok and error",
                ))
            }
        };
        Ok(Response { id: w.id, outcome })
    }
}

impl Response {
    /// A successful answer carrying `value`.
    pub fn ok<T: Serialize>(id: u64, value: &T) -> Self {
        Response {
            id,
            outcome: Outcome::Ok(
                serde_json::value::to_raw_value(value).expect("API results always serialise"),
            ),
        }
    }

    /// A failed answer.
    pub fn err(id: u64, err: &OpError) -> Self {
        Response {
            id,
            outcome: Outcome::Err(WireError {
                kind: err.kind(),
                message: err.to_string(),
            }),
        }
    }

    /// The result as JSON (as the runner sent it), or the error.
    pub fn into_raw(self) -> Result<Box<RawValue>, OpError> {
        match self.outcome {
            Outcome::Ok(raw) => Ok(raw),
            Outcome::Err(e) => Err(OpError::from_wire(e.kind, e.message)),
        }
    }

    /// The result decoded as `T`, or the error the runner sent.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, OpError> {
        match self.outcome {
            Outcome::Ok(raw) => serde_json::from_str(raw.get()).map_err(|e| {
                OpError::Unavailable(format!("unexpected answer from the runner: {e}"))
            }),
            Outcome::Err(e) => Err(OpError::from_wire(e.kind, e.message)),
        }
    }
}

/// An error on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireError {
    /// What kind of error; the CLI's exit code follows from it.
    pub kind: ErrorKind,
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

/// Executes a request against a store and answers with request `id`'s response: the one
/// interpreter of requests, used by the socket server (and, typed, by [`Call::execute`] for a
/// CLI holding the store).
pub async fn dispatch(exec: Exec<'_>, id: u64, request: Request) -> Response {
    async fn answer<C: Call>(exec: Exec<'_>, id: u64, call: C) -> Response {
        match call.execute(exec).await {
            Ok(value) => Response::ok(id, &value),
            Err(e) => Response::err(id, &e),
        }
    }
    match request {
        Request::Hello(r) => answer(exec, id, r).await,
        Request::Create(r) => answer(exec, id, r).await,
        Request::InsertJobs(r) => answer(exec, id, r).await,
        Request::UpdateAssignment(r) => answer(exec, id, r).await,
        Request::ListAssignments(r) => answer(exec, id, r).await,
        Request::ListAssignmentsJson(r) => answer(exec, id, r).await,
        Request::GetAssignment(r) => answer(exec, id, r).await,
        Request::ListJobs(r) => answer(exec, id, r).await,
        Request::GetJob(r) => answer(exec, id, r).await,
        Request::Cancel(r) => answer(exec, id, r).await,
        Request::Retry(r) => answer(exec, id, r).await,
        Request::Approve(r) => answer(exec, id, r).await,
        Request::SkipJob(r) => answer(exec, id, r).await,
        Request::Triggers(r) => answer(exec, id, r).await,
        Request::Watch(r) => answer(exec, id, r).await,
        Request::CheckStore(r) => answer(exec, id, r).await,
        Request::OpenPullRequest(r) => answer(exec, id, r).await,
        Request::Rollback(r) => answer(exec, id, r).await,
        Request::Events(r) => answer(exec, id, r).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let env = Envelope {
            id: 7,
            request: Request::InsertJobs(InsertJobs {
                assignment: "ab".into(),
                jobs: vec![],
                after: None,
                caller: Some("j".into()),
            }),
        };
        let text = serde_json::to_string(&env).unwrap();
        assert_eq!(
            text,
            r#"{"id":7,"request":{"op":"insertJobs","assignment":"ab","jobs":[],"after":null,"caller":"j"}}"#
        );
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), env);
    }

    #[test]
    fn responses_have_a_stable_wire_form() {
        let ok = Response::ok(3, &vec!["a"]);
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"id":3,"ok":["a"]}"#
        );
        let err = Response::err(4, &OpError::NotFound("no assignment x".into()));
        let text = serde_json::to_string(&err).unwrap();
        assert_eq!(
            text,
            r#"{"id":4,"error":{"kind":"not_found","message":"no assignment x"}}"#
        );
        let back: Response = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            back.into_result::<serde_json::Value>(),
            Err(OpError::NotFound(m)) if m == "no assignment x"
        ));
        // Neither a result nor an error is not a response.
        assert!(serde_json::from_str::<Response>(r#"{"id":5}"#).is_err());
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
