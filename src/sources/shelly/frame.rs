//! The JSON-RPC frames Shelly Gen2+ devices exchange over their outbound WebSocket
//! (and HTTP RPC): a plug's identity is the `src` of its frames; notifications
//! (`NotifyStatus`, `NotifyFullStatus`, `NotifyEvent`) carry no `id`; replies echo
//! the `id` of our request. Pure functions only.

use serde_json::{Map, Value};

/// A frame from a plug.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `NotifyStatus`, `NotifyFullStatus`, `NotifyEvent`, ...: no `id`.
    Notification {
        src: String,
        method: String,
        params: Map<String, Value>,
    },
    /// A reply to one of our requests.
    Response {
        id: u64,
        src: Option<String>,
        result: Result<Value, RpcError>,
    },
}

/// An RPC error reply, e.g. `{"code":-109,"message":"shutting down in 952 ms"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("neither a notification (src and method) nor a reply (id with result or error)")]
    Unknown,
    #[error("reply id {0} is not one of ours")]
    ForeignId(String),
}

/// Parses one text frame from a plug.
pub fn parse_frame(text: &str) -> Result<Incoming, FrameError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| FrameError::NotJson(e.to_string()))?;
    let Value::Object(mut frame) = value else {
        return Err(FrameError::NotAnObject);
    };
    let src = frame.get("src").and_then(Value::as_str).map(str::to_owned);
    if let Some(id) = frame.get("id") {
        let has_result = frame.contains_key("result");
        let has_error = frame.contains_key("error");
        if has_result || has_error {
            // We send numeric ids; a plug echoes them as numbers (some clients
            // stringify them).
            let id = match id {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| FrameError::ForeignId(id.to_string()))?;
            let result = if has_error {
                let e = frame.get("error").cloned().unwrap_or(Value::Null);
                Err(RpcError {
                    code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: match e.get("message") {
                        Some(Value::String(m)) => m.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    },
                })
            } else {
                Ok(frame.remove("result").unwrap_or(Value::Null))
            };
            return Ok(Incoming::Response { id, src, result });
        }
    }
    match (src, frame.get("method").and_then(Value::as_str)) {
        (Some(src), Some(method)) if !src.is_empty() => {
            let method = method.to_owned();
            let params = match frame.remove("params") {
                Some(Value::Object(p)) => p,
                _ => Map::new(),
            };
            Ok(Incoming::Notification {
                src,
                method,
                params,
            })
        }
        _ => Err(FrameError::Unknown),
    }
}

/// A request frame to a plug.
pub fn request(id: u64, src: &str, method: &str, params: Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "src": src, "method": method, "params": params})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames() {
        let n = parse_frame(r#"{"src":"shellyplusplugs-a1","dst":"ws","method":"NotifyFullStatus","params":{"ts":3.1,"switch:0":{"id":0}}}"#)
            .expect("notification");
        assert!(
            matches!(n, Incoming::Notification { ref src, ref method, .. } if src == "shellyplusplugs-a1" && method == "NotifyFullStatus")
        );
        let r = parse_frame(r#"{"id":7,"src":"p","dst":"hub","result":{"id":0,"apower":1.5}}"#)
            .expect("reply");
        assert_eq!(
            r,
            Incoming::Response {
                id: 7,
                src: Some("p".into()),
                result: Ok(json!({"id":0,"apower":1.5}))
            }
        );
        let e = parse_frame(
            r#"{"id":"8","src":"p","error":{"code":-109,"message":"shutting down in 952 ms"}}"#,
        )
        .expect("error");
        assert_eq!(
            e,
            Incoming::Response {
                id: 8,
                src: Some("p".into()),
                result: Err(RpcError {
                    code: -109,
                    message: "shutting down in 952 ms".into()
                })
            }
        );
        // A 401 carries its challenge as a JSON string in `message`.
        let e =
            parse_frame(r#"{"id":9,"error":{"code":401,"message":"{\"auth_type\": \"digest\"}"}}"#)
                .expect("401");
        assert!(matches!(
            e,
            Incoming::Response {
                result: Err(RpcError { code: 401, .. }),
                ..
            }
        ));
        assert!(matches!(
            parse_frame("nonsense"),
            Err(FrameError::NotJson(_))
        ));
        assert_eq!(parse_frame("[1,2]"), Err(FrameError::NotAnObject));
        assert_eq!(
            parse_frame(r#"{"method":"NotifyStatus"}"#),
            Err(FrameError::Unknown)
        );
        assert_eq!(
            parse_frame(r#"{"src":"","method":"NotifyStatus"}"#),
            Err(FrameError::Unknown)
        );
        assert!(matches!(
            parse_frame(r#"{"id":-1,"result":{}}"#),
            Err(FrameError::ForeignId(_))
        ));
    }
}
