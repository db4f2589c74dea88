//! tuning: host checks and limit probes.
