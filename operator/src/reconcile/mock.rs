//! A scripted stand-in for the API server, for unit tests of reconcile
//! decisions (as kube-rs' controller-rs does with `tower-test`): the
//! reconciler talks to a real [`kube::Client`] whose transport is a
//! [`tower_test::mock`] pair; a task answers each request with the test's
//! `respond` script and records it, and the test then checks the calls in
//! order: which objects were applied, deleted, published and patched.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

use super::Context;
use crate::metrics::Metrics;

/// One request, as the reconciler sent it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// The URL path, e.g. `/api/v1/namespaces/ns/secrets/creds`.
    pub path: String,
    /// The query string, e.g. `fieldManager=berth-operator&force=true`.
    pub query: String,
    /// The JSON body; `Null` when there is none.
    pub body: Value,
}

impl Call {
    /// `"PATCH /api/v1/..."`, for comparing call sequences.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Whether this is a `method` request on a path ending in `suffix`,
    /// e.g. `is("PATCH", "/deployments/demo")`.
    pub fn is(&self, method: &str, suffix: &str) -> bool {
        self.method == method && self.path.ends_with(suffix)
    }
}

/// The answer to one call: a status code and a JSON body.
pub type Answer = (u16, Value);

/// A 404 in the API server's `Status` shape.
pub fn not_found(call: &Call) -> Answer {
    (
        404,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "NotFound", "code": 404,
            "message": format!("{} not found", call.path),
        }),
    )
}

/// The request body itself, as the API server answers an apply, a status
/// patch or an Event create (close enough for the reconciler).
pub fn echo(call: &Call) -> Answer {
    (200, call.body.clone())
}

/// An empty list of `kind` (e.g. `SyncPolicyList`).
pub fn empty_list(api_version: &str, kind: &str) -> Answer {
    (
        200,
        json!({"apiVersion": api_version, "kind": kind, "metadata": {}, "items": []}),
    )
}

/// A Context whose client talks to the returned [`ApiServer`].
pub fn context() -> (Arc<Context>, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let metrics = Metrics::new().unwrap_or_else(|err| panic!("metrics: {err}"));
    let ctx = Arc::new(Context::new(client, metrics, "test-operator"));
    (ctx, ApiServer(handle))
}

/// The server side of the mock transport.
#[derive(Debug)]
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    /// Answers every request with `respond` until the client side is
    /// dropped (or nothing comes for 5 s); yields the calls in order.
    pub fn serve(
        self,
        respond: impl Fn(&Call) -> Answer + Send + 'static,
    ) -> JoinHandle<Vec<Call>> {
        let mut handle = self.0;
        tokio::spawn(async move {
            let mut calls = Vec::new();
            loop {
                let next = tokio::time::timeout(Duration::from_secs(5), handle.next_request());
                let Ok(Some((request, send))) = next.await else {
                    return calls;
                };
                let call = read(request).await;
                let (status, body) = respond(&call);
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string().into_bytes()))
                    .unwrap_or_else(|err| panic!("response: {err}"));
                send.send_response(response);
                calls.push(call);
            }
        })
    }
}

async fn read(request: Request<Body>) -> Call {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .unwrap_or_else(|err| panic!("request body: {err}"));
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|err| panic!("request body: {err}"))
    };
    Call {
        method,
        path,
        query,
        body,
    }
}
