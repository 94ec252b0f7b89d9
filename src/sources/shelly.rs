//! Shelly Gen2+ plugs: the JSON-RPC frames they exchange over their outbound
//! WebSocket (and HTTP RPC), the status document they report, and the power
//! readings in it. Pure functions only; the hub (`crate::shelly`) owns sockets and
//! the collector owns metric names.
//!
//! Facts from Shelly's Gen2 API docs: a plug's identity is the `src` of its frames;
//! `NotifyFullStatus` carries every component's status, `NotifyStatus` only the
//! changed fields (merged over the last full status); replies echo the request `id`.
//! Power components are found by their status keys, never by model: `switch:N`
//! (plugs, 1PM), `pm1:N` (PM Mini, Plug PM), `em1:N` + `em1data:N` (Pro EM, EM Gen3),
//! `em:N` + `emdata:N` (Pro 3EM, three phases). Gen1 devices answer `GET /status`
//! with `meters[]` (energy in watt-minutes).

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

/// The component types that measure power; the rest of a plug's status (`sys`,
/// `wifi`, `cloud`, UI settings, ...) is not kept, so a hub holding thousands of
/// plugs keeps only what it reads.
pub const POWER_COMPONENTS: &[&str] = &["switch", "pm1", "em", "em1", "emdata", "em1data"];

fn is_power_component(key: &str) -> bool {
    let kind = key.split_once(':').map_or(key, |(kind, _)| kind);
    POWER_COMPONENTS.contains(&kind)
}

/// Applies a notification or a `Shelly.GetStatus` result to the status document
/// of power components: a full status replaces it, a partial one is merged
/// component by component, field by field.
pub fn apply_status(document: &mut Map<String, Value>, params: &Map<String, Value>, full: bool) {
    if full {
        document.clear();
    }
    for (key, value) in params {
        if !is_power_component(key) {
            continue;
        }
        match document.get_mut(key) {
            Some(existing) if !full => merge(existing, value),
            _ => {
                document.insert(key.clone(), value.clone());
            }
        }
    }
}

/// A plug's power-component status kept compactly, for hubs that hold thousands
/// of plugs: one entry per numeric, boolean or error-list leaf
/// (`switch:0.aenergy.total` → 1234.5), sorted by path. Strings and other arrays
/// (`source`, `by_minute`) are not kept; nothing reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactStatus {
    leaves: Vec<(Box<str>, Value)>,
}

impl CompactStatus {
    /// Same semantics as [`apply_status`]: full replaces, partial merges.
    pub fn apply(&mut self, params: &Map<String, Value>, full: bool) {
        if full {
            self.leaves.clear();
        }
        for (key, value) in params {
            if is_power_component(key) {
                self.flatten(key, value);
            }
        }
        self.leaves.shrink_to_fit();
    }

    fn flatten(&mut self, path: &str, value: &Value) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    self.flatten(&format!("{path}.{k}"), v);
                }
            }
            Value::Number(_) | Value::Bool(_) => self.set(path, value.clone()),
            Value::Array(items) if path.ends_with(".errors") => {
                self.set(path, Value::Array(items.clone()))
            }
            Value::Null => self.remove(path),
            _ => {}
        }
    }

    fn set(&mut self, path: &str, value: Value) {
        match self.leaves.binary_search_by(|(k, _)| (**k).cmp(path)) {
            Ok(i) => self.leaves[i].1 = value,
            Err(i) => self.leaves.insert(i, (path.into(), value)),
        }
    }

    fn remove(&mut self, path: &str) {
        if let Ok(i) = self.leaves.binary_search_by(|(k, _)| (**k).cmp(path)) {
            self.leaves.remove(i);
        }
    }

    /// The status as a nested document, for [`reading`] and for display.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut root = Value::Object(Map::new());
        for (path, value) in &self.leaves {
            let mut node = &mut root;
            let mut parts = path.split('.').peekable();
            while let Some(part) = parts.next() {
                let Value::Object(map) = node else { break };
                if parts.peek().is_none() {
                    map.insert(part.to_owned(), value.clone());
                    break;
                }
                node = map
                    .entry(part.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
        }
        match root {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// What a plug measures, totalled over its power components.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Active power, W (negative when a bidirectional meter exports).
    pub power_watts: Option<f64>,
    pub voltage_volts: Option<f64>,
    pub current_amps: Option<f64>,
    pub power_factor: Option<f64>,
    pub frequency_hertz: Option<f64>,
    /// Active energy since the counters were last reset, Wh.
    pub energy_wh: Option<f64>,
    /// Returned (exported) energy, Wh.
    pub returned_energy_wh: Option<f64>,
    pub temperature_celsius: Option<f64>,
    /// Relay state, for devices with one relay.
    pub output_on: Option<bool>,
    /// Error flags the device reports (`overtemp`, `overpower`, ...).
    pub errors: Vec<String>,
    /// The power components the reading was built from (`switch:0`, `em:0`).
    pub components: Vec<String>,
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

fn add(total: &mut Option<f64>, value: Option<f64>) {
    if let Some(v) = value {
        *total = Some(total.unwrap_or(0.0) + v);
    }
}

fn first(slot: &mut Option<f64>, value: Option<f64>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// Component keys in a stable order: by type, then index.
fn components<'a>(status: &'a Map<String, Value>, kind: &str) -> Vec<(&'a String, &'a Value)> {
    let mut found: Vec<(u32, (&String, &Value))> = status
        .iter()
        .filter_map(|(k, v)| {
            let (t, i) = k.split_once(':')?;
            (t == kind).then(|| i.parse().ok().map(|i| (i, (k, v))))?
        })
        .collect();
    found.sort_by_key(|(i, _)| *i);
    found.into_iter().map(|(_, kv)| kv).collect()
}

/// Totals the power components of a Gen2+ status document.
///
/// Powers, currents and energies are summed over components; voltage, frequency,
/// power factor and temperature come from the first component that has them (the
/// channels of one device share the mains). A `switch:N` without `apower` is a relay
/// without metering and is not a power component.
pub fn reading(status: &Map<String, Value>) -> Reading {
    let mut r = Reading::default();
    let mut relays = Vec::new();
    for (key, s) in components(status, "switch") {
        relays.push(s.get("output").and_then(Value::as_bool));
        if s.get("apower").is_none() {
            continue;
        }
        r.components.push(key.clone());
        metered_channel(&mut r, s, "apower");
        first(
            &mut r.temperature_celsius,
            s.get("temperature").and_then(|t| num(t, "tC")),
        );
    }
    for (key, s) in components(status, "pm1") {
        r.components.push(key.clone());
        metered_channel(&mut r, s, "apower");
    }
    for (key, s) in components(status, "em1") {
        r.components.push(key.clone());
        metered_channel(&mut r, s, "act_power");
    }
    for (_, d) in components(status, "em1data") {
        add(&mut r.energy_wh, num(d, "total_act_energy"));
        add(&mut r.returned_energy_wh, num(d, "total_act_ret_energy"));
    }
    for (key, s) in components(status, "em") {
        r.components.push(key.clone());
        add(&mut r.power_watts, num(s, "total_act_power"));
        add(&mut r.current_amps, num(s, "total_current"));
        for phase in ["a", "b", "c"] {
            first(&mut r.voltage_volts, num(s, &format!("{phase}_voltage")));
            first(&mut r.frequency_hertz, num(s, &format!("{phase}_freq")));
        }
        collect_errors(&mut r, s);
    }
    for (_, d) in components(status, "emdata") {
        add(&mut r.energy_wh, num(d, "total_act"));
        add(&mut r.returned_energy_wh, num(d, "total_act_ret"));
    }
    if r.components.len() == 1 && relays.len() == 1 {
        r.output_on = relays[0];
    }
    r
}

fn metered_channel(r: &mut Reading, s: &Value, power_key: &str) {
    add(&mut r.power_watts, num(s, power_key));
    add(&mut r.current_amps, num(s, "current"));
    first(&mut r.voltage_volts, num(s, "voltage"));
    first(&mut r.frequency_hertz, num(s, "freq"));
    first(&mut r.power_factor, num(s, "pf"));
    add(
        &mut r.energy_wh,
        s.get("aenergy").and_then(|a| num(a, "total")),
    );
    add(
        &mut r.returned_energy_wh,
        s.get("ret_aenergy").and_then(|a| num(a, "total")),
    );
    collect_errors(r, s);
}

fn collect_errors(r: &mut Reading, s: &Value) {
    if let Some(errors) = s.get("errors").and_then(Value::as_array) {
        for e in errors.iter().filter_map(Value::as_str) {
            if !r.errors.iter().any(|x| x == e) {
                r.errors.push(e.to_owned());
            }
        }
    }
}

/// A Gen1 `GET /status` body: `meters[]` (power W, total in watt-minutes),
/// `relays[]`, `temperature`.
pub fn gen1_reading(status: &Value) -> Reading {
    let mut r = Reading::default();
    if let Some(meters) = status.get("meters").and_then(Value::as_array) {
        for (i, m) in meters.iter().enumerate() {
            if m.get("is_valid").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            r.components.push(format!("meter:{i}"));
            add(&mut r.power_watts, num(m, "power"));
            // Watt-minutes, the most repeated bug in Shelly integrations.
            add(&mut r.energy_wh, num(m, "total").map(|wmin| wmin / 60.0));
        }
    }
    if let Some(emeters) = status.get("emeters").and_then(Value::as_array) {
        for (i, m) in emeters.iter().enumerate() {
            r.components.push(format!("emeter:{i}"));
            add(&mut r.power_watts, num(m, "power"));
            add(&mut r.current_amps, num(m, "current"));
            first(&mut r.voltage_volts, num(m, "voltage"));
            first(&mut r.power_factor, num(m, "pf"));
            add(&mut r.energy_wh, num(m, "total"));
            add(&mut r.returned_energy_wh, num(m, "total_returned"));
        }
    }
    if let Some(relays) = status.get("relays").and_then(Value::as_array)
        && relays.len() == 1
    {
        r.output_on = relays[0].get("ison").and_then(Value::as_bool);
    }
    r.temperature_celsius =
        num(status, "temperature").or_else(|| status.get("tmp").and_then(|t| num(t, "tC")));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

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

    #[test]
    fn partial_status_merges_over_full() {
        let mut doc = Map::new();
        apply_status(
            &mut doc,
            &obj(
                json!({"ts":1.0,"switch:0":{"id":0,"output":true,"apower":45.3,"voltage":220.5,"current":0.205,"temperature":{"tC":35.2}},"sys":{"uptime":5}}),
            ),
            true,
        );
        apply_status(
            &mut doc,
            &obj(json!({"ts":2.0,"switch:0":{"apower":46.1,"voltage":220.7},"sys":{"uptime":6}})),
            false,
        );
        assert_eq!(
            Value::Object(doc.clone()),
            json!({"switch:0":{"id":0,"output":true,"apower":46.1,"voltage":220.7,"current":0.205,"temperature":{"tC":35.2}}}),
            "power components are merged; the rest of the status is not kept"
        );
        apply_status(
            &mut doc,
            &obj(json!({"switch:0":{"id":0,"apower":1.0}})),
            true,
        );
        assert_eq!(
            Value::Object(doc),
            json!({"switch:0":{"id":0,"apower":1.0}})
        );
    }

    #[test]
    fn compact_status_merges_like_the_document() {
        let full = obj(
            json!({"ts":1.0,"switch:0":{"id":0,"source":"init","output":true,"apower":45.3,"voltage":220.5,"aenergy":{"total":11.5,"by_minute":[1,2,3]},"temperature":{"tC":35.2},"errors":["overtemp"]},"sys":{"uptime":5}}),
        );
        let patch =
            obj(json!({"switch:0":{"apower":46.1,"temperature":{"tC":36.0}},"sys":{"uptime":6}}));
        let mut compact = CompactStatus::default();
        compact.apply(&full, true);
        compact.apply(&patch, false);
        let mut doc = Map::new();
        apply_status(&mut doc, &full, true);
        apply_status(&mut doc, &patch, false);
        assert_eq!(reading(&compact.to_map()), reading(&doc));
        assert_eq!(
            Value::Object(compact.to_map()),
            json!({"switch:0":{"id":0,"output":true,"apower":46.1,"voltage":220.5,"aenergy":{"total":11.5},"temperature":{"tC":36.0},"errors":["overtemp"]}})
        );
        compact.apply(&obj(json!({"pm1:0":{"apower":1}})), true);
        assert_eq!(
            Value::Object(compact.to_map()),
            json!({"pm1:0":{"apower":1}})
        );
    }

    #[test]
    fn plug_switch() {
        // The Switch.GetStatus example of Shelly's docs.
        let r = reading(&obj(
            json!({"switch:0":{"id":0,"source":"WS_in","output":false,"apower":0,"voltage":225.9,"current":0,"freq":50,"aenergy":{"total":11.679,"by_minute":[0,0,0],"minute_ts":1654511972},"ret_aenergy":{"total":5.817,"by_minute":[0,0,0],"minute_ts":1654511615},"temperature":{"tC":53.3,"tF":127.9}}}),
        ));
        assert_eq!(r.power_watts, Some(0.0));
        assert_eq!(r.voltage_volts, Some(225.9));
        assert_eq!(r.frequency_hertz, Some(50.0));
        assert_eq!(r.energy_wh, Some(11.679));
        assert_eq!(r.returned_energy_wh, Some(5.817));
        assert_eq!(r.temperature_celsius, Some(53.3));
        assert_eq!(r.output_on, Some(false));
        assert_eq!(r.components, ["switch:0"]);
    }

    #[test]
    fn pm_mini_pro_em_and_pro_3em() {
        let pm = reading(&obj(
            json!({"pm1:0":{"id":0,"voltage":230.9,"current":1,"apower":230,"freq":51,"aenergy":{"total":3195.88,"by_minute":[0,0,0],"minute_ts":1727857620},"ret_aenergy":{"total":0,"by_minute":[0,0,0],"minute_ts":1727857620}}}),
        ));
        assert_eq!(
            (
                pm.power_watts,
                pm.voltage_volts,
                pm.current_amps,
                pm.energy_wh
            ),
            (Some(230.0), Some(230.9), Some(1.0), Some(3195.88))
        );
        assert_eq!(pm.output_on, None);

        let pro_em = reading(&obj(json!({
            "em1:0":{"id":0,"voltage":240.2,"current":6.473,"act_power":1327.6,"aprt_power":1557.6,"pf":0.87,"freq":50,"calibration":"factory"},
            "em1:1":{"id":1,"voltage":240.1,"current":1.0,"act_power":100.4,"pf":0.9,"freq":50},
            "em1data:0":{"id":0,"total_act_energy":2776175.11,"total_act_ret_energy":571584.87},
            "em1data:1":{"id":1,"total_act_energy":1000.0,"total_act_ret_energy":0},
            "switch:0":{"id":0,"output":true}
        })));
        assert_eq!(pro_em.power_watts, Some(1428.0));
        assert_eq!(pro_em.current_amps, Some(7.473));
        assert_eq!(pro_em.voltage_volts, Some(240.2));
        assert_eq!(pro_em.power_factor, Some(0.87));
        assert_eq!(pro_em.energy_wh, Some(2777175.11));
        assert_eq!(
            pro_em.components,
            ["em1:0", "em1:1"],
            "an unmetered relay is not a power component"
        );

        let pro_3em = reading(&obj(json!({
            "em:0":{"id":0,"a_current":4.029,"a_voltage":236.1,"a_act_power":951.2,"a_freq":50,"b_current":4.027,"b_voltage":236.201,"b_act_power":-951.1,"c_current":3.03,"c_voltage":236.402,"c_act_power":715.4,"n_current":null,"total_current":11.083,"total_act_power":2484.782,"errors":["phase_sequence"]},
            "emdata:0":{"id":0,"a_total_act_energy":0,"total_act":1500.5,"total_act_ret":20.25}
        })));
        assert_eq!(pro_3em.power_watts, Some(2484.782));
        assert_eq!(pro_3em.current_amps, Some(11.083));
        assert_eq!(pro_3em.voltage_volts, Some(236.1));
        assert_eq!(pro_3em.energy_wh, Some(1500.5));
        assert_eq!(pro_3em.returned_energy_wh, Some(20.25));
        assert_eq!(pro_3em.errors, ["phase_sequence"]);
    }

    #[test]
    fn gen1_watt_minutes() {
        let r = gen1_reading(
            &json!({"meters":[{"power":230,"overpower":0.00,"is_valid":true,"timestamp":1756902511,"counters":[400.467,1127.491,1046.330],"total":3981113}],"relays":[{"ison":true}],"temperature":41.2}),
        );
        assert_eq!(r.power_watts, Some(230.0));
        assert_eq!(r.energy_wh, Some(3981113.0 / 60.0));
        assert_eq!(r.output_on, Some(true));
        assert_eq!(r.temperature_celsius, Some(41.2));
    }

    #[test]
    fn unmetered_or_garbage_status_reads_nothing() {
        let r = reading(&obj(
            json!({"switch:0":{"id":0,"output":true},"sys":{},"switch:x":{"apower":1},"pm1:0":"nonsense"}),
        ));
        assert_eq!(r.power_watts, None);
        assert_eq!(r.components, ["pm1:0"]);
    }
}
