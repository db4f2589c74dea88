//! osprey library
pub mod client;
