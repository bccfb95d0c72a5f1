//! Integration tests: one binary, real parts (the distribution registry, skopeo, the promoter
//! binary) started by the tests on loopback. See `support`.

mod attest;
mod copy;
mod faults;
mod gates;
mod history;
mod identity;
mod page;
mod pipeline_view;
mod push_auth;
mod service;
mod support;
mod team_gates;
mod timeouts;
