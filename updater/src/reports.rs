//! Fleet reports: what happened on this node, queued on disk and sent to the server.
//!
//! A report is written to the queue before any attempt to send it, and removed only once
//! the server accepted it, so a report survives a failed network and a reboot. Sending never
//! changes slot state: commit is final whatever the server answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use partitions::io::FileStore;

use crate::error::{Error, Result};

/// The queue directory, relative to the state directory.
const QUEUE_DIR: &str = "reports";
/// Oldest reports are dropped beyond this many: a node offline for months must not fill
/// its state partition.
const MAX_QUEUED: usize = 256;
const MAX_REPORT_FILE: u64 = 16 << 10;

pub use proto::Report;

/// What the server made of a report: the client's answer to its POST. A report refused for
/// good is dropped so the ones queued behind it still go out.
pub use repo_client::http::Posted as Delivery;

/// Reports waiting to be sent, oldest first.
#[derive(Debug, Clone)]
pub struct ReportQueue {
    fs: Arc<dyn FileStore>,
}

impl ReportQueue {
    pub fn new(fs: Arc<dyn FileStore>) -> Self {
        ReportQueue { fs }
    }

    /// Durably queues `report`, giving it a random id if it has none: the id is stored with
    /// it, so every retry sends the same one and the server keeps the report once.
    pub fn push(&self, report: &Report) -> Result<()> {
        let dir = Path::new(QUEUE_DIR);
        self.fs
            .create_dir_all(dir)
            .map_err(Error::io("cannot create the report queue"))?;
        let names = self.names()?;
        let next = names
            .last()
            .and_then(|n| n.trim_end_matches(".json").parse::<u64>().ok())
            .map_or(0, |n| n + 1);
        let report = Report {
            id: report.id.clone().or_else(|| Some(new_report_id())),
            ..report.clone()
        };
        let bytes = serde_json::to_vec(&report)
            .map_err(|e| Error::io("cannot encode a report")(std::io::Error::other(e)))?;
        self.fs
            .write_atomic(&dir.join(format!("{next:012}.json")), &bytes)
            .map_err(Error::io("cannot queue a report"))?;
        for old in names
            .iter()
            .take((names.len() + 1).saturating_sub(MAX_QUEUED))
        {
            self.remove(old)?;
        }
        Ok(())
    }

    /// The queued reports, oldest first (unreadable files are dropped with a warning).
    pub fn pending(&self) -> Result<Vec<(String, Report)>> {
        let mut out = Vec::new();
        for name in self.names()? {
            let parsed = self
                .fs
                .read(&path_of(&name), MAX_REPORT_FILE)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            match parsed {
                Some(report) => out.push((name, report)),
                None => {
                    tracing::warn!(file = %name, "dropping an unreadable queued report");
                    self.remove(&name)?;
                }
            }
        }
        Ok(out)
    }

    /// Sends queued reports in order with `send`, removing each one the server accepted or
    /// refused for good; stops at the first failure to deliver (the rest wait for the next
    /// attempt). Returns how many were accepted.
    pub fn flush(&self, mut send: impl FnMut(&Report) -> Result<Delivery>) -> Result<usize> {
        let mut sent = 0;
        for (name, report) in self.pending()? {
            match deliver(&report, &mut send) {
                Ok(Delivery::Accepted) => sent += 1,
                Ok(Delivery::Refused(reason)) => {
                    tracing::warn!(%reason, file = %name, "the server refused a report: dropped");
                }
                Err(error) => {
                    tracing::warn!(%error, "report not sent; it stays queued");
                    break;
                }
            }
            self.remove(&name)?;
        }
        Ok(sent)
    }

    fn names(&self) -> Result<Vec<String>> {
        match self.fs.list(Path::new(QUEUE_DIR)) {
            Ok(names) => Ok(names.into_iter().filter(|n| n.ends_with(".json")).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("cannot list the report queue")(e)),
        }
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.fs
            .remove(&path_of(name))
            .map_err(Error::io("cannot remove a sent report"))
    }
}

/// Sends `report`; one with a `transfer` that is refused goes again without it, since a
/// server from before transfers refuses the unknown field (the outcome still counts).
fn deliver(
    report: &Report,
    send: &mut impl FnMut(&Report) -> Result<Delivery>,
) -> Result<Delivery> {
    match send(report)? {
        Delivery::Refused(reason) if report.transfer.is_some() => {
            tracing::info!(%reason, "report refused with its transfer: sending it without");
            send(&Report {
                transfer: None,
                ..report.clone()
            })
        }
        delivery => Ok(delivery),
    }
}

/// 128 random bits in hex: unique per node without keeping a counter across reinstalls.
fn new_report_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn path_of(name: &str) -> PathBuf {
    Path::new(QUEUE_DIR).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use partitions::io::MemFs;

    fn report(to: &str) -> Report {
        Report {
            id: None,
            node_id: "node-1".into(),
            channel: "stable".into(),
            from_version: "1.0.0".into(),
            to_version: to.into(),
            outcome: proto::Outcome::Committed,
            reason: None,
            transfer: None,
        }
    }

    #[test]
    fn reports_are_sent_in_order_and_kept_until_accepted() {
        let queue = ReportQueue::new(Arc::new(MemFs::new()));
        for to in ["2.0.0", "3.0.0", "4.0.0"] {
            queue.push(&report(to)).unwrap();
        }
        let mut seen = Vec::new();
        let sent = queue
            .flush(|r| {
                if r.to_version == "3.0.0" {
                    return Err(Error::usage("server down"));
                }
                seen.push(r.to_version.clone());
                Ok(Delivery::Accepted)
            })
            .unwrap();
        assert_eq!((sent, seen), (1, vec!["2.0.0".to_string()]));
        let left: Vec<_> = queue
            .pending()
            .unwrap()
            .into_iter()
            .map(|(_, r)| r.to_version)
            .collect();
        assert_eq!(left, ["3.0.0", "4.0.0"]);
        assert_eq!(queue.flush(|_| Ok(Delivery::Accepted)).unwrap(), 2);
        assert!(queue.pending().unwrap().is_empty());
    }

    #[test]
    fn a_retried_report_keeps_the_id_it_was_queued_with() {
        let queue = ReportQueue::new(Arc::new(MemFs::new()));
        queue.push(&report("2.0.0")).unwrap();
        queue.push(&report("3.0.0")).unwrap();
        let mut sent_ids = Vec::new();
        for _ in 0..2 {
            queue
                .flush(|r| {
                    sent_ids.push(r.id.clone());
                    Err(Error::usage("server down"))
                })
                .unwrap();
        }
        let mut accepted = Vec::new();
        queue
            .flush(|r| {
                accepted.push(r.id.clone());
                Ok(Delivery::Accepted)
            })
            .unwrap();
        let first = sent_ids[0].clone().unwrap();
        assert!(proto::names::check_report_id(&first).is_ok(), "{first}");
        assert_eq!(sent_ids, [Some(first.clone()), Some(first.clone())]);
        assert_eq!(accepted[0].as_deref(), Some(first.as_str()));
        assert_ne!(accepted[0], accepted[1], "each report has its own id");
        let mut given = report("4.0.0");
        given.id = Some("chosen-id".into());
        queue.push(&given).unwrap();
        assert_eq!(
            queue.pending().unwrap()[0].1.id.as_deref(),
            Some("chosen-id")
        );
    }

    #[test]
    fn a_server_from_before_transfers_gets_the_report_without_one() {
        let queue = ReportQueue::new(Arc::new(MemFs::new()));
        let mut installed = report("2.0.0");
        installed.outcome = proto::Outcome::Installed;
        installed.transfer = Some(proto::Transfer {
            bytes_fetched: 10,
            bytes_reused: 90,
            bundle_bytes: 100,
        });
        queue.push(&installed).unwrap();
        assert_eq!(queue.pending().unwrap()[0].1.transfer, installed.transfer);
        let mut seen = Vec::new();
        let sent = queue
            .flush(|r| {
                seen.push(r.transfer);
                Ok(match r.transfer {
                    Some(_) => Delivery::Refused("unknown field `transfer`".into()),
                    None => Delivery::Accepted,
                })
            })
            .unwrap();
        assert_eq!((sent, seen), (1, vec![installed.transfer, None]));
        assert!(queue.pending().unwrap().is_empty());
        // A report without a transfer that is refused is not sent twice.
        queue.push(&report("3.0.0")).unwrap();
        let mut tries = 0;
        queue
            .flush(|_| {
                tries += 1;
                Ok(Delivery::Refused("no".into()))
            })
            .unwrap();
        assert_eq!(tries, 1);
    }

    #[test]
    fn a_report_refused_for_good_does_not_block_the_queue() {
        let queue = ReportQueue::new(Arc::new(MemFs::new()));
        for to in ["2.0.0", "3.0.0"] {
            queue.push(&report(to)).unwrap();
        }
        let sent = queue
            .flush(|r| match r.to_version.as_str() {
                "2.0.0" => Ok(Delivery::Refused("invalid node_id".into())),
                _ => Ok(Delivery::Accepted),
            })
            .unwrap();
        assert_eq!(sent, 1);
        assert!(queue.pending().unwrap().is_empty());
    }

    #[test]
    fn the_queue_is_bounded() {
        let queue = ReportQueue::new(Arc::new(MemFs::new()));
        for n in 0..(MAX_QUEUED + 5) {
            queue.push(&report(&format!("{n}.0.0"))).unwrap();
        }
        let pending = queue.pending().unwrap();
        assert_eq!(pending.len(), MAX_QUEUED);
        assert_eq!(pending[0].1.to_version, "5.0.0");
    }
}
