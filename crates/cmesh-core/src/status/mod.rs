//! `cmesh status`, the pure half: parsers for what the agents print and the chart stores,
//! what each cluster is expected to hold, and the evaluation of observed state into checks.

pub mod parse;
