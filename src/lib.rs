//! promoter: promotes immutable container images through a path to production, exactly.
//!
//! Data flows one way: the command line (`cli`) turns arguments into a copy job;
//! `promote` resolves identities and runs the `registry` copy engine.

pub mod cli;
pub mod config;
pub mod promote;
pub mod registry;
