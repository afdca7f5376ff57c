//! Git gate tests.
