//! Outbound events: what promoter announces on `PROMOTER_EVENTS_TOPIC` (DESIGN.md §5).

pub mod pubsub;
