//! NVIDIA's `tegrastats`: the line format (`parse`) and the streams that deliver
//! lines (`stream`: a long-lived child process, or a recording replayed in a loop).
//!
//! Format reference: `docs/tegrastats.md`. Mapping fields to metric ids is the
//! `tegrastats` collector's job.

pub mod parse;
pub mod stream;
