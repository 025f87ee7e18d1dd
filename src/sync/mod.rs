//! Placeholder: the sender's half (scan, manifest, tree, diff) replaces this
//! file at merge. The receiver's half lives in the modules below.

pub mod chunk;
pub mod receive;
pub mod trash;
