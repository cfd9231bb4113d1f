//! The benchmark's ceiling for the HTTP stack: an axum server that parses an Open Inference Protocol infer request
//! with ferry's own decoder and answers its inputs back as outputs, with no model and no queue.
//!
//! Usage: `ferry-bench-echo ADDR` (e.g. 127.0.0.1:9000). Worker threads: `TOKIO_WORKER_THREADS`.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ferry_protocol::{INFERENCE_HEADER_CONTENT_LENGTH, decode_infer_request, encode_infer_response};

async fn echo(headers: HeaderMap, body: Bytes) -> Response {
    let json_len = headers.get(INFERENCE_HEADER_CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let request = match decode_infer_request(json_len, &body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let binary = request.binary_data_output;
    let outputs: Vec<_> = request.inputs.into_iter().map(|t| (t, binary)).collect();
    match encode_infer_response("echo", "1", request.id.as_deref(), &outputs) {
        Ok(encoded) => {
            let mut response = Response::new(axum::body::Body::from(encoded.body));
            response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            if let Some(n) = encoded.json_len {
                response.headers_mut().insert(INFERENCE_HEADER_CONTENT_LENGTH, header::HeaderValue::from(n));
            }
            response
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".into());
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        let app = Router::new().route("/v2/models/{name}/infer", post(echo));
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("echo listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await
    })
}
