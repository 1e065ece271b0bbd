//! End-to-end benchmark harness (filled in below).
fn main() {}
