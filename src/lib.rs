//! osprey library
