//! What a source offers, verified once from the root of trust to the manifest: a bundle file
//! against the trusted root, or the bundle a repository's channel names, through the root
//! chain and the channel (docs/DESIGN.md §4). What the daemon decides on and what the install
//! writes are the same signed documents, by construction.

use std::path::Path;

use bundle::verify::{verify_channel, ChainWalk, Verified};
use bundle::{Channel, Manifest, Root};

use crate::agent::Agent;
use crate::error::{Error, Result};
use crate::snapshot::NodeSnapshot;
use crate::source::{verify_bundle, verify_named_bundle, Source};
use repo_client::{display_path, BundleBytes, DirRepository, FileBundle, Repository};

/// An update verified once, from its root of trust to its manifest.
pub struct Offer {
    pub manifest: Verified<Manifest>,
    pub source: Box<dyn BundleBytes>,
    /// The release's chunk store beside the bundle, when its manifest signs one (FORMAT
    /// §3.4): found by its fixed name, read at the signed size; it may be absent, and the
    /// install then fetches whole frames.
    pub store: Option<Box<dyn BundleBytes>>,
    /// The channel metadata that named the bundle (none for a bundle file).
    pub channel: Option<Verified<Channel>>,
}

/// A channel verified against the root chain, before its bundle is looked at.
pub struct ChannelOffer {
    pub root: Verified<Root>,
    pub metadata: Verified<Channel>,
}

impl Agent {
    /// What `source` offers, verified: a bundle file against the trusted root, or the
    /// bundle a repository's channel names, through the root chain and the channel.
    pub fn offer(
        &self,
        snapshot: &mut NodeSnapshot,
        source: &Source,
        channel: Option<&str>,
    ) -> Result<Offer> {
        let repo: Box<dyn Repository> = match (source, channel) {
            (Source::File(path), None) => return self.offer_file(snapshot, path),
            (Source::File(path), Some(_)) => {
                return Err(Error::usage(format!(
                    "{} is a bundle file: --channel applies to repositories only",
                    path.display()
                )))
            }
            (_, None) => {
                return Err(Error::usage(format!(
                    "{source} is a repository: name the channel with --channel"
                )))
            }
            (Source::Dir(dir), Some(_)) => Box::new(DirRepository::new(dir)),
            (Source::Url(url), Some(_)) => Box::new(self.http(url)?),
        };
        let channel = channel.unwrap_or_default();
        let verified = self.channel_offer(snapshot, repo.as_ref(), channel, None)?;
        self.offer_of_channel(snapshot, repo.as_ref(), verified)
    }

    fn offer_file(&self, snapshot: &mut NodeSnapshot, path: &Path) -> Result<Offer> {
        let now = self.now(self.state_and_counters(snapshot)?.1);
        let root = ChainWalk {
            root: snapshot.trusted_root(&self.trust)?,
            complete: true,
        }
        .fresh(now)
        .map_err(Error::verify("the trusted root"))?;
        let source = FileBundle::new(path);
        let manifest = verify_bundle(&source, &root, &self.limits)?;
        self.see_signed_time(snapshot, &manifest)?;
        let store = manifest.store().map(|_| {
            let path = proto::chunk_store_path(&path.to_string_lossy());
            Box::new(FileBundle::new(Path::new(&path))) as Box<dyn BundleBytes>
        });
        Ok(Offer {
            manifest,
            source: Box::new(source),
            store,
            channel: None,
        })
    }

    /// Verifies `channel` in `repo` as [`Agent::channel_offer`] does, as an operation of
    /// its own.
    pub fn verify_channel(
        &self,
        repo: &dyn Repository,
        channel: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ChannelOffer> {
        self.channel_offer(&mut NodeSnapshot::default(), repo, channel, body)
    }

    /// Verifies `channel` in `repo`: walks the root chain (storing each new root at once),
    /// then checks the channel's signatures, expiry and version, and records its version.
    /// `body` is the channel file when the caller fetched it already (a conditional poll).
    pub fn channel_offer(
        &self,
        snapshot: &mut NodeSnapshot,
        repo: &dyn Repository,
        channel: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ChannelOffer> {
        let now = self.now(self.state_and_counters(snapshot)?.1);
        let max = self.limits.max_metadata_len;
        let trusted = snapshot.trusted_root(&self.trust)?;
        let root = self.trust.walk(
            &trusted,
            &repo.name(),
            |version| Ok(repo.fetch(&format!("{version}.root.json"), max)?),
            now,
        )?;
        snapshot.walked_to(&root);
        let path = format!("channels/{channel}.json");
        let name = display_path(repo, &path);
        let bytes = match body {
            Some(bytes) => bytes,
            None => repo
                .fetch(&path, max)?
                .ok_or_else(|| Error::usage(format!("{name} does not exist: no such channel")))?,
        };
        let counters = self.state_and_counters(snapshot)?.1;
        let min_version = counters.min_channel_version(channel, &root);
        let metadata = verify_channel(&root, &bytes, channel, min_version, now, &self.limits)
            .map_err(Error::verify(&name))?;
        self.trust.update(counters, |counters| {
            counters.see_channel(channel, metadata.version, &root)
        })?;
        Ok(ChannelOffer { root, metadata })
    }

    /// The offer of a verified channel: the bundle it names, verified against the same root.
    pub fn offer_of_channel(
        &self,
        snapshot: &mut NodeSnapshot,
        repo: &dyn Repository,
        channel: ChannelOffer,
    ) -> Result<Offer> {
        let (source, manifest) =
            verify_named_bundle(repo, &channel.root, &channel.metadata, &self.limits)?;
        self.see_signed_time(snapshot, &manifest)?;
        let store = match manifest.store() {
            Some(store) => Some(repo.bundle(
                &proto::chunk_store_path(&channel.metadata.release.bundle),
                store.size,
            )?),
            None => None,
        };
        Ok(Offer {
            manifest,
            source,
            store,
            channel: Some(channel.metadata),
        })
    }

    fn see_signed_time(
        &self,
        snapshot: &mut NodeSnapshot,
        manifest: &Verified<Manifest>,
    ) -> Result<()> {
        let counters = self.state_and_counters(snapshot)?.1;
        self.trust.update(counters, |counters| {
            counters.see_signed_time(manifest.created())
        })
    }
}
