//! The wire types every Tandem program agrees on, and nothing else: the name rules of
//! products, channels and nodes, the kernel command line rule of boot assets, the shape of
//! a channel document (`channel`: what the signer writes, the agent verifies and the server
//! shows), the report a node sends (`POST /v1/reports`), the reboot-lease requests
//! (`fleetlock`), the signed node requests and key enrollment (`nodeauth`), and the unsigned pause hint (`channels/NAME.pause`); and the one rule for
//! when a program's output may carry colour (`term`) and for how an error is written on one
//! line (`chain`). No I/O beyond asking
//! whether a stream is a terminal, no crypto: the server links this crate and never the signer.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod chain;
pub mod channel;
pub mod cmdline;
pub mod fleetlock;
pub mod names;
pub mod nodeauth;
pub mod pause;
pub mod report;
pub mod term;

pub use chain::chain;
pub use channel::{ChannelDoc, ReleaseDoc, RolloutDoc};
pub use cmdline::{check_cmdline, cmdline_text, CmdlineError, MAX_CMDLINE};
pub use names::{
    check_name, check_node_id, check_path_segment, chunk_store_path, NameError, CHUNK_STORE_SUFFIX,
};
pub use pause::Pause;
pub use report::{Outcome, Report, Transfer};
