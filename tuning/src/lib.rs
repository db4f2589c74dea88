//! tuning: host checks and limit probes (placeholder; the io probe lands next).
