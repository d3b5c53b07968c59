//! The repository server: static files, rollouts, reports.
//! Not yet implemented: this crate is being built under issue 5.
