//! [`Config`]: which backend keeps a node's boot state and where its files live, as the
//! updater's configuration file and `tandem-disk`'s flags give it; [`open`]: the one place
//! a backend is built. A new backend is a variant here, a module beside this one and its
//! tests: nothing outside this crate names the backends.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::gpt::{GptBootControl, PairEntries};
use super::grub::GrubEnvBootControl;
use super::mark;
use super::systemd_boot::{EntryTemplate, SystemdBootControl};
use super::BootControl;
use crate::error::Result;
use crate::io::{FileStore, RealFs};
use crate::model::BackendKind;
use crate::slots::{Disk, SlotPair};

/// A validated boot-backend configuration.
///
/// Deserializes from the keys of a TOML (or any serde) map listed in [`Config::KEYS`],
/// ignoring the others, so a program's configuration file can hold them at its top level:
///
/// ```toml
/// boot = "systemd-boot"        # or "gpt", "grub"
/// esp = "/efi"                 # systemd-boot: the mounted EFI system partition
/// # grubenv = "/boot/efi/EFI/tandem/grubenv"   # grub: the environment block
/// [systemd_boot]               # optional: how new entries are written
/// options = "root=PARTUUID={partuuid} rw tandem.slot={slot} quiet"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "RawConfig")]
pub enum Config {
    /// ChromeOS bits in the GPT entries of the slots.
    Gpt,
    /// A GRUB environment block.
    Grub {
        /// The grubenv file.
        grubenv: PathBuf,
    },
    /// Boot Loader Specification entries in an ESP.
    SystemdBoot {
        /// The mounted EFI system partition.
        esp: PathBuf,
        /// How new entries are written.
        entry: EntryTemplate,
    },
}

/// The keys as written, before validation.
#[derive(Debug, serde::Deserialize)]
struct RawConfig {
    boot: BackendKind,
    grubenv: Option<PathBuf>,
    esp: Option<PathBuf>,
    systemd_boot: Option<EntryTemplate>,
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;
    fn try_from(raw: RawConfig) -> std::result::Result<Self, ConfigError> {
        Config::new(raw.boot, raw.grubenv, raw.esp, raw.systemd_boot)
    }
}

/// A boot-backend configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The backend needs a path that was not given.
    #[error("the {kind} backend needs {key}: {what} (updater.toml: {key} = \"…\"; tandem-disk: --{key} PATH)")]
    Missing {
        /// The backend.
        kind: BackendKind,
        /// The key (and flag) name.
        key: &'static str,
        /// What the path is.
        what: &'static str,
    },
    /// A setting of another backend.
    #[error("{key} is a setting of another backend than {kind}")]
    Stray {
        /// The backend.
        kind: BackendKind,
        /// The key (and flag) name.
        key: &'static str,
    },
    /// The grubenv path names no file.
    #[error("grubenv = {path:?} names no file")]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// Entries whose kernel command line does not say which slot booted.
    #[error("[systemd_boot] options = {options:?} must pass tandem.slot={{slot}} or root=PARTUUID={{partuuid}}, or the running system cannot tell which slot it booted")]
    SlotNotNamed {
        /// The options template.
        options: String,
    },
}

impl Config {
    /// The keys this type reads from a configuration map.
    pub const KEYS: [&'static str; 4] = ["boot", "grubenv", "esp", "systemd_boot"];

    /// Check that `kind` gets the paths it needs and no other backend's.
    pub fn new(
        kind: BackendKind,
        grubenv: Option<PathBuf>,
        esp: Option<PathBuf>,
        entry: Option<EntryTemplate>,
    ) -> std::result::Result<Self, ConfigError> {
        let stray = [
            ("grubenv", grubenv.is_some() && kind != BackendKind::Grub),
            ("esp", esp.is_some() && kind != BackendKind::SystemdBoot),
            (
                "systemd_boot",
                entry.is_some() && kind != BackendKind::SystemdBoot,
            ),
        ];
        if let Some((key, _)) = stray.into_iter().find(|(_, stray)| *stray) {
            return Err(ConfigError::Stray { kind, key });
        }
        let missing = |key, what| ConfigError::Missing { kind, key, what };
        match kind {
            BackendKind::Gpt => Ok(Config::Gpt),
            BackendKind::Grub => {
                let grubenv =
                    grubenv.ok_or_else(|| missing("grubenv", "the GRUB environment block"))?;
                if grubenv.file_name().is_none() {
                    return Err(ConfigError::NotAFile { path: grubenv });
                }
                Ok(Config::Grub { grubenv })
            }
            BackendKind::SystemdBoot => {
                let esp = esp.ok_or_else(|| {
                    missing("esp", "the directory of the mounted EFI system partition")
                })?;
                let entry = entry.unwrap_or_default();
                if !entry.names_the_slot() {
                    return Err(ConfigError::SlotNotNamed {
                        options: entry.options,
                    });
                }
                Ok(Config::SystemdBoot { esp, entry })
            }
        }
    }

    /// Which backend.
    pub fn kind(&self) -> BackendKind {
        match self {
            Config::Gpt => BackendKind::Gpt,
            Config::Grub { .. } => BackendKind::Grub,
            Config::SystemdBoot { .. } => BackendKind::SystemdBoot,
        }
    }

    /// The directory holding the backend's files (the grubenv's directory, the ESP); `None`
    /// for the GPT backend, which keeps everything on the disk.
    pub fn files_dir(&self) -> Option<PathBuf> {
        match self {
            Config::Gpt => None,
            Config::Grub { grubenv } => Some(match grubenv.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }),
            Config::SystemdBoot { esp, .. } => Some(esp.clone()),
        }
    }
}

/// Build the backend of `config` for `pair` on `disk`. `files` is the store of
/// [`Config::files_dir`] (a simulated one in tests); `None` opens the real directory.
///
/// Refuses ([`crate::error::BootStateError::WrongBackend`]) a backend other than the one
/// the disk was set up for ([`mark`]); writes nothing. Call [`BootControl::prepare`] before
/// the first write.
pub fn open(
    config: &Config,
    disk: &Disk,
    pair: &SlotPair,
    files: Option<Arc<dyn FileStore>>,
) -> Result<Box<dyn BootControl>> {
    mark::check(
        &PairEntries::new(disk.device().clone(), pair),
        config.kind(),
    )?;
    let store = || -> Arc<dyn FileStore> {
        match (files.clone(), config.files_dir()) {
            (Some(store), _) => store,
            (None, dir) => Arc::new(RealFs::new(dir.unwrap_or_default())),
        }
    };
    Ok(match config {
        Config::Gpt => Box::new(GptBootControl::new(disk.device().clone(), pair)),
        Config::Grub { grubenv } => {
            let name = grubenv.file_name().map_or(Path::new("grubenv"), Path::new);
            Box::new(GrubEnvBootControl::new(store(), name, disk, pair))
        }
        Config::SystemdBoot { entry, .. } => {
            Box::new(SystemdBootControl::new(store(), disk, pair, entry.clone()))
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn each_backend_gets_its_paths_and_no_other() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            Config::new(BackendKind::Gpt, None, None, None),
            Ok(Config::Gpt)
        );
        let grub = Config::new(BackendKind::Grub, p("/efi/grubenv"), None, None).unwrap();
        assert_eq!(grub.files_dir(), p("/efi"));
        let local = Config::new(BackendKind::Grub, p("grubenv"), None, None).unwrap();
        assert_eq!(local.files_dir(), p("."));
        let sd = Config::new(BackendKind::SystemdBoot, None, p("/efi"), None).unwrap();
        assert_eq!(sd.kind(), BackendKind::SystemdBoot);
        assert_eq!(sd.files_dir(), p("/efi"));

        let err = Config::new(BackendKind::Grub, None, None, None).unwrap_err();
        assert!(err.to_string().contains("needs grubenv"), "{err}");
        let err = Config::new(BackendKind::SystemdBoot, None, None, None).unwrap_err();
        assert!(err.to_string().contains("needs esp"), "{err}");
        let err = Config::new(BackendKind::Gpt, p("/g"), None, None).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Stray {
                kind: BackendKind::Gpt,
                key: "grubenv"
            }
        );
        let err = Config::new(
            BackendKind::Grub,
            p("/g"),
            None,
            Some(EntryTemplate::default()),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::Stray {
                kind: BackendKind::Grub,
                key: "systemd_boot"
            }
        );
        let err = Config::new(BackendKind::Grub, p("/"), None, None).unwrap_err();
        assert!(matches!(err, ConfigError::NotAFile { .. }), "{err}");
        let quiet = EntryTemplate {
            options: "quiet".into(),
            ..EntryTemplate::default()
        };
        let err = Config::new(BackendKind::SystemdBoot, None, p("/efi"), Some(quiet)).unwrap_err();
        assert!(err.to_string().contains("tandem.slot"), "{err}");
    }

    #[test]
    fn reads_its_keys_from_a_larger_map() {
        let json = r#"{"disk": "/dev/sda", "boot": "systemd-boot", "esp": "/efi",
            "systemd_boot": {"options": "root=PARTUUID={partuuid} console=ttyS0"}}"#;
        let config: Config = serde_json::from_str(json).unwrap();
        let Config::SystemdBoot { esp, entry } = config else {
            panic!("{config:?}")
        };
        assert_eq!(esp, PathBuf::from("/efi"));
        assert!(entry.options.ends_with("console=ttyS0"));
        assert_eq!(entry.linux, EntryTemplate::default().linux);
        let err = serde_json::from_str::<Config>(r#"{"boot": "grub"}"#).unwrap_err();
        assert!(err.to_string().contains("needs grubenv"), "{err}");
        let err = serde_json::from_str::<Config>(r#"{"boot": "lilo"}"#).unwrap_err();
        assert!(err.to_string().contains("lilo"), "{err}");
    }
}
