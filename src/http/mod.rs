//! The HTTP service (Cloud Run): router, handlers, and the one place that maps outcomes to
//! status codes, which for Pub/Sub deliveries are the ack.

pub mod push_auth;
