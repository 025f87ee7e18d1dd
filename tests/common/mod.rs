//! Helpers shared by the integration tests. Each test crate uses only some of
//! them.
#![allow(dead_code)]

pub mod example;
pub mod kamailio;
pub mod netns;
pub mod smtp;
pub mod snmptrapd;
pub mod sshd;
pub mod sync_pair;
pub mod syslog;
pub mod tree;
