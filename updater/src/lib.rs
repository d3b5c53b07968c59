//! The on-node agent: install pipeline, sources, state machine, health checks.
//! Not yet implemented: this crate is being built under issue 4.
