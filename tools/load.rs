//! tickwire-load: placeholder, being written.
fn main() {}
