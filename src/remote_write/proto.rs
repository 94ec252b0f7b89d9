//! The Prometheus remote write 1.0 message, encoded by hand: it is four small
//! messages, and a generated codec would be the biggest thing in the binary.
//!
//! ```text
//! WriteRequest { repeated TimeSeries timeseries = 1; }
//! TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//! Label        { string name = 1; string value = 2; }
//! Sample       { double value = 1; int64 timestamp = 2; }   // milliseconds
//! ```
//!
//! [`encode_series`] writes one `timeseries` field of a `WriteRequest`; since
//! repeated fields concatenate, any run of them is itself a valid `WriteRequest`
//! body (before snappy compression).

const LEN: u8 = 2;
const FIXED64: u8 = 1;
const VARINT: u8 = 0;

fn tag(field: u8, wire: u8) -> u8 {
    (field << 3) | wire
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn string_field_len(s: &str) -> usize {
    1 + varint_len(s.len() as u64) + s.len()
}

fn put_string(out: &mut Vec<u8>, field: u8, s: &str) {
    out.push(tag(field, LEN));
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends one series with one sample as a `WriteRequest.timeseries` field.
/// `labels` must include `__name__` and be sorted by name (the protocol says so).
pub fn encode_series(out: &mut Vec<u8>, labels: &[(&str, &str)], value: f64, timestamp_ms: i64) {
    let label_len = |(k, v): &(&str, &str)| string_field_len(k) + string_field_len(v);
    let sample_len = 1 + 8 + 1 + varint_len(timestamp_ms as u64);
    let series_len: usize = labels
        .iter()
        .map(|l| {
            let n = label_len(l);
            1 + varint_len(n as u64) + n
        })
        .sum::<usize>()
        + 1
        + varint_len(sample_len as u64)
        + sample_len;
    out.reserve(1 + varint_len(series_len as u64) + series_len);
    out.push(tag(1, LEN));
    put_varint(out, series_len as u64);
    for label in labels {
        out.push(tag(1, LEN));
        put_varint(out, label_len(label) as u64);
        put_string(out, 1, label.0);
        put_string(out, 2, label.1);
    }
    out.push(tag(2, LEN));
    put_varint(out, sample_len as u64);
    out.push(tag(1, FIXED64));
    out.extend_from_slice(&value.to_le_bytes());
    out.push(tag(2, VARINT));
    put_varint(out, timestamp_ms as u64);
}

#[cfg(test)]
pub mod decode {
    //! The same messages with prost, to check the hand-written encoder against an
    //! independent codec (tests only).

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

#[cfg(test)]
mod tests {
    use super::decode::*;
    use super::*;
    use prost::Message;

    #[test]
    fn prost_reads_what_we_write() {
        let mut body = Vec::new();
        let long = "x".repeat(300);
        encode_series(
            &mut body,
            &[
                ("__name__", "host_temp_celsius"),
                ("hostname", "edge-01"),
                ("zone", &long),
            ],
            48.5,
            1_795_316_215_123,
        );
        encode_series(&mut body, &[("__name__", "up_thing")], 1.0, 5);
        let decoded = WriteRequest::decode(body.as_slice()).expect("decode");
        assert_eq!(decoded.timeseries.len(), 2);
        let first = &decoded.timeseries[0];
        let labels: Vec<(&str, &str)> = first
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("__name__", "host_temp_celsius"),
                ("hostname", "edge-01"),
                ("zone", long.as_str())
            ]
        );
        assert_eq!(
            first.samples,
            [Sample {
                value: 48.5,
                timestamp: 1_795_316_215_123
            }]
        );
        assert_eq!(decoded.timeseries[1].samples[0].timestamp, 5);
        // And the reverse: prost's encoding of the same request is byte for byte ours.
        assert_eq!(decoded.encode_to_vec(), body);
        // Zero values are written out (prost would leave them implicit); both read
        // back the same.
        let mut zero = Vec::new();
        encode_series(&mut zero, &[("__name__", "z")], 0.0, 0);
        let decoded = WriteRequest::decode(zero.as_slice()).expect("decode");
        assert_eq!(
            decoded.timeseries[0].samples,
            [Sample {
                value: 0.0,
                timestamp: 0
            }]
        );
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }
}
