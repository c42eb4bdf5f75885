//! Enrichment after parsing: user-agent facts in Bowser's names, and app names.

pub mod app_names;
pub mod user_agent;
