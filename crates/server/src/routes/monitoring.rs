//! Monitoring under `/api/v1`: a model's live drift, quality and performance against their baselines, ground-truth
//! feedback, and the alerts.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_auth::Permission;
use ferry_types::ErrorKind;
use serde_json::Value;

use crate::auth::{Authorized, ToInfer, ToRead};
use crate::quality::{FeedbackItem, FeedbackReport, MAX_FEEDBACK_ITEMS};
use crate::routes::management::{ErrorResponse, model_name, registry};
use crate::{ApiError, AppState};

/// Largest feedback body: room for [`MAX_FEEDBACK_ITEMS`] items with long ids.
const MAX_FEEDBACK_BYTES: usize = 4 * 1024 * 1024;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/models/{name}/monitoring", get(model_monitoring))
        .route("/api/v1/models/{name}/feedback", post(post_feedback))
        .route("/api/v1/alerts", get(list_alerts))
}

#[utoipa::path(get, path = "/api/v1/models/{name}/monitoring", tag = "monitoring",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, description = "The served version's live state. Drift against the package's reference \
        profile: the last completed window (per feature and output: test, score, threshold, verdict, both \
        histograms; the dataset verdict), the rows gathered in the window filling now, samples dropped. `quality`: \
        live metrics from feedback per version over the feedback window, beside the package's validation metrics \
        (baseline) and the relative change, with the concept-drift detectors. `performance`: latency and \
        throughput over the live window beside the warm-up baseline.",
        body = serde_json::Value),
        (status = 404, body = ErrorResponse)))]
pub(crate) async fn model_monitoring(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let ctx = registry(&state)?;
    let drift = ctx.drift_watch.as_ref().and_then(|w| w.status(name.as_str()));
    let quality = match &ctx.quality_watch {
        Some(q) if q.wants_model(name.as_str()) => Some(q.evaluate(name.as_str()).await?),
        _ => None,
    };
    // The primary, when a deployment serves several versions.
    let serving = state.repository().get(name.as_str(), None).ok().map(|m| m.version());
    let performance = serving.and_then(|v| state.metrics().performance.status(name.as_str(), v));
    let shadow = state.metrics().shadows.of(name.as_str());
    if drift.is_none() && quality.is_none() && performance.is_none() && shadow.is_empty() {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!(
                "model {name:?} is not watched: it is not served from the registry, or it has had no request yet and \
                 its package has no reference profile (pack it with --reference)"
            ),
        ));
    }
    let mut body = match drift {
        Some(d) => serde_json::to_value(d).unwrap_or_default(),
        None => serde_json::json!({ "model": name.as_str(), "version": serving }),
    };
    if let Some(obj) = body.as_object_mut() {
        obj.insert("quality".into(), serde_json::to_value(quality).unwrap_or_default());
        obj.insert("performance".into(), serde_json::to_value(performance).unwrap_or_default());
        obj.insert("shadow".into(), serde_json::to_value(shadow).unwrap_or_default());
    }
    Ok(Json(body))
}

#[utoipa::path(post, path = "/api/v1/models/{name}/feedback", tag = "monitoring",
    params(("name" = String, Path, description = "Model name")),
    request_body(content = [FeedbackItem], description = "Ground truth for earlier predictions: a JSON array (or \
        `{\"feedback\": [...]}`) of at most 10,000 items, each the inference request's `id` (ferry returns one when \
        the request had none), the `row` of a batched request (default 0), and either `label` (the true class id) \
        or `value` (the true number), with an optional `timestamp`"),
    responses((status = 200, description = "How many items were joined; unmatched ids are reported, not refused",
        body = FeedbackReport),
        (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 413, body = ErrorResponse)))]
pub(crate) async fn post_feedback(
    auth: Authorized<ToInfer>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<FeedbackReport>, ApiError> {
    let name = model_name(&name)?;
    auth.on(name.as_str()).await?;
    let ctx = registry(&state)?;
    let quality = ctx
        .quality_watch
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "feedback is off on this server ([monitoring] feedback)"))?;
    let body = crate::body::read_body(&headers, body, MAX_FEEDBACK_BYTES).await?;
    let items = parse_feedback(&body)?;
    let report = quality.feedback(name.as_str(), items).await?;
    if report.unmatched > 0 {
        tracing::info!(model = %name, matched = report.matched, unmatched = report.unmatched,
            "feedback for predictions ferry does not have (unknown, expired, or not yet written)");
    }
    Ok(Json(report))
}

/// A JSON array of items, or `{"feedback": [...]}`.
fn parse_feedback(body: &[u8]) -> Result<Vec<FeedbackItem>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Batch {
        Items(Vec<Value>),
        Wrapped { feedback: Vec<Value> },
    }
    let bad = |why: String| ApiError::new(ErrorKind::InvalidInput, format!("malformed feedback: {why}"));
    let batch: Batch = serde_json::from_slice(body).map_err(|e| {
        bad(format!("{e}; expected a JSON array of {{\"request_id\", \"label\" | \"value\", \"timestamp\"?}}"))
    })?;
    let values = match batch {
        Batch::Items(v) | Batch::Wrapped { feedback: v } => v,
    };
    if values.len() > MAX_FEEDBACK_ITEMS {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("{} feedback items; at most {MAX_FEEDBACK_ITEMS} per request", values.len()),
        ));
    }
    // Item by item, so that the error names the one at fault.
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| serde_json::from_value(v).map_err(|e| bad(format!("item {i}: {e}"))))
        .collect()
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "monitoring",
    responses((status = 200, description = "Every configured alert rule with, per model it watches, the state \
        (inactive, pending, firing, resolved), the latest value, since when it holds, and the history of \
        transitions; and how many notices were delivered or failed", body = serde_json::Value),
        (status = 404, body = ErrorResponse)))]
pub(crate) async fn list_alerts(
    auth: Authorized<ToRead>,
    State(state): State<AppState>,
) -> Result<Json<crate::AlertsView>, ApiError> {
    let ctx = registry(&state)?;
    let alerting =
        ctx.alerting.as_ref().ok_or_else(|| ApiError::new(ErrorKind::NotFound, "alerting is off on this server"))?;
    // A key scoped to some models sees their alerts only.
    Ok(Json(alerting.view(|model| auth.access.require_on(Permission::Read, model).is_ok())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_bodies_are_parsed_or_refused_with_the_item_at_fault() {
        let items =
            parse_feedback(br#"[{"request_id":"a","label":1},{"request_id":"b","row":2,"value":0.5}]"#).expect("array");
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].row, 2);
        let wrapped = parse_feedback(br#"{"feedback":[{"request_id":"a","label":1}]}"#).expect("wrapped");
        assert_eq!(wrapped.len(), 1);
        let err = parse_feedback(br#"[{"request_id":"a","label":1},{"label":1}]"#).expect_err("no id");
        assert!(err.message().contains("item 1") && err.message().contains("request_id"), "{}", err.message());
        let err = parse_feedback(br#"[{"request_id":"a","lable":1}]"#).expect_err("typo");
        assert!(err.message().contains("lable"), "{}", err.message());
        assert!(parse_feedback(b"not json").expect_err("junk").message().contains("malformed feedback"));
    }
}
