//! `wasi:http` for guests whose toolchain imports it by default (componentize-js does): every
//! interface is there, and every outgoing request fails with `HTTP-request-denied` before a
//! byte leaves the node. A handler's only way out is `publish`.
//!
//! What a guest builds with these interfaces (header fields, request bodies) lives in host
//! memory, outside the instance's memory limit, so it is kept small: fields of at most
//! [`MAX_FIELDS_BYTES`], bodies that buffer at most [`MAX_BODY_CHUNK`], and no more than
//! [`super::state::MAX_RESOURCES`] resources of any kind per instance.

use http::{Request, Response};
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};

/// The most a guest's set of header fields may take (in memory, not on the wire).
pub(crate) const MAX_FIELDS_BYTES: usize = 8 << 10;

/// The most a request body buffers: the one write that waits for a request never sent.
pub(crate) const MAX_BODY_CHUNK: usize = 1 << 10;

/// The hooks that deny every request a guest sends.
#[derive(Debug, Default)]
pub(crate) struct DenyEveryRequest;

type Done = Box<dyn Future<Output = Result<(), Error>> + Send>;
type Sent = Box<dyn Future<Output = Result<(Response<WasiBody>, Done), Error>> + Send>;

impl WasiHttpHooks for DenyEveryRequest {
    fn send_request(
        &mut self,
        _request: Request<WasiBody>,
        _options: Option<RequestOptions>,
        _response_done: Done,
    ) -> Sent {
        Box::new(async { Err(Error::HttpRequestDenied) })
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        MAX_BODY_CHUNK
    }
}

/// What a guest's `wasi:http` calls work on.
#[derive(Debug)]
pub(crate) struct Http {
    ctx: WasiHttpCtx,
    hooks: DenyEveryRequest,
}

impl Default for Http {
    fn default() -> Self {
        let mut ctx = WasiHttpCtx::new();
        ctx.set_field_size_limit(MAX_FIELDS_BYTES);
        Self {
            ctx,
            hooks: DenyEveryRequest,
        }
    }
}

impl Http {
    /// The view `wasi:http` works through, on the instance's resource table.
    pub(crate) fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.ctx,
            table,
            hooks: &mut self.hooks,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test here.
mod tests {
    use http_body_util::{BodyExt as _, Empty};
    use wasmtime_wasi_http::WasiHttpHooks as _;

    use super::*;

    #[tokio::test]
    async fn every_request_is_denied() {
        let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
        let request = Request::get("http://127.0.0.1:1/").body(body).unwrap();
        let sent = DenyEveryRequest.send_request(request, None, Box::new(async { Ok(()) }));
        let denied = Box::into_pin(sent).await;
        assert!(matches!(denied, Err(Error::HttpRequestDenied)));
        assert_eq!(
            DenyEveryRequest.p2_outgoing_body_chunk_size(),
            MAX_BODY_CHUNK
        );
    }
}
