//! The `/groups` routes: named partial configs that devices inherit (see
//! `layers` for how they combine), with revisions, `If-Match`, validation and
//! history like a device's config. Storage is `db`; the router and the shared
//! answers are the parent, `api`.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{
    MAX_BODY_BYTES, MAX_HISTORY, ServerState, blocking, etag, invalid_config, precondition, refused,
};
use crate::config_server::db::WriteOutcome;
use crate::config_server::layers::{self, Doc, MATCH, Rules};
use crate::net::body::{PathParam, QueryParams, read_body_limited};
use crate::net::error::ApiError;

fn check_name(name: &str) -> Result<(), ApiError> {
    if layers::is_group_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid group name: {name:?} (letters, digits, '.', '_', '-'; at most 64)"
        )))
    }
}

fn unknown(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("Unknown group: {name}"))
}

/// How many devices are in each group now.
fn member_counts(state: &ServerState) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for listed in state.db.list() {
        for group in &listed.entry.groups {
            *counts.entry(group.clone()).or_insert(0) += 1;
        }
    }
    counts
}

pub async fn list(State(state): State<Arc<ServerState>>) -> axum::Json<Value> {
    let counts = member_counts(&state);
    let groups: Vec<Value> = state
        .db
        .groups()
        .iter()
        .map(|(name, g)| {
            json!({
                "name": name,
                "revision": g.revision,
                "updated_at": g.updated_at,
                "members": counts.get(name).copied().unwrap_or(0),
                "match": g.rules,
                "keys": g.config.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(json!({"groups": groups}))
}

pub async fn get_group(
    State(state): State<Arc<ServerState>>,
    PathParam(name): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let group = state.db.group(&name).ok_or_else(|| unknown(&name))?;
    let current = etag(group.revision);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == current.as_bytes());
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        axum::Json(Value::Object(group.document())).into_response()
    };
    response.headers_mut().insert(header::ETAG, current);
    Ok(response)
}

/// Splits a group's body into its partial config and match rules, checking
/// both: a group holds only keys a config file may hold, none that stays on
/// the device, and what it holds must validate as a config by itself.
fn parse_group(name: &str, value: Value) -> Result<(Doc, Option<Rules>), ApiError> {
    let Value::Object(mut config) = value else {
        return Err(ApiError::bad_request(
            "a group is a JSON object: config keys, and optionally match",
        ));
    };
    let rules = config
        .remove(MATCH)
        .map(|m| Rules::parse(&m))
        .transpose()
        .map_err(|e| ApiError::bad_request(e).detail("field", MATCH))?;
    for key in config.keys() {
        if let Some(why) = layers::forbidden_in_group(key) {
            return Err(
                ApiError::bad_request(format!("{key} cannot be set by a group: {why}"))
                    .detail("field", key.clone()),
            );
        }
    }
    if let Some(Value::Object(shelly)) = config.get("shelly") {
        for key in crate::config::doc::LOCAL_ONLY_SHELLY {
            if shelly.contains_key(*key) {
                return Err(ApiError::bad_request(format!(
                    "shelly.{key} cannot be set by a group: it stays on each device"
                ))
                .detail("field", format!("shelly.{key}")));
            }
        }
    }
    let origin = format!("PUT /groups/{name}");
    crate::config::validate_json(&Value::Object(config.clone()), Path::new(&origin))
        .map_err(|e| invalid_config(&e))?;
    Ok((config, rules))
}

pub async fn put_group(
    State(state): State<Arc<ServerState>>,
    PathParam(name): PathParam<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let expect = precondition(&headers);
    let body = read_body_limited(&headers, body, MAX_BODY_BYTES).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}")))?;
    let (config, rules) = parse_group(&name, value)?;
    let group = name.clone();
    let (outcome, members) =
        blocking(move || state.db.put_group(&group, config, rules, expect)).await?;
    let (status, revision) = match outcome {
        WriteOutcome::Created(r) => (StatusCode::CREATED, r),
        WriteOutcome::Updated(r) => (StatusCode::OK, r),
        WriteOutcome::PreconditionFailed(current) => return Err(stale(&name, current)),
        other => return Err(refused(&name, other)),
    };
    tracing::info!(group = name, revision, members, "group stored");
    Ok(super::tagged(
        status,
        json!({"status": "success", "group": name, "revision": revision, "members": members}),
        revision,
    ))
}

fn stale(name: &str, current: Option<u64>) -> ApiError {
    super::stale(&format!("group {name}"), current)
}

pub async fn delete_group(
    State(state): State<Arc<ServerState>>,
    PathParam(name): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let expect = precondition(&headers);
    let group = name.clone();
    let (outcome, members) = blocking(move || state.db.delete_group(&group, expect)).await?;
    match outcome {
        WriteOutcome::Deleted(revision) => {
            tracing::info!(group = name, revision, members, "group deleted");
            Ok(axum::Json(json!({"status": "success", "group": name, "revision": revision, "members": members}))
                .into_response())
        }
        WriteOutcome::NotFound => Err(unknown(&name)),
        WriteOutcome::PreconditionFailed(current) => Err(stale(&name, current)),
        other => Err(refused(&name, other)),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

pub async fn history(
    State(state): State<Arc<ServerState>>,
    PathParam(name): PathParam<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let limit = query.limit.unwrap_or(MAX_HISTORY).clamp(1, MAX_HISTORY);
    let group = name.clone();
    let rows = blocking(move || state.db.group_history(&group, limit)).await?;
    if rows.is_empty() {
        return Err(unknown(&name));
    }
    Ok(axum::Json(json!({"group": name, "history": rows})).into_response())
}
