//! End-to-end test helpers live in tests/; this crate has no code of its own.
