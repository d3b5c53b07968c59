//! Links and special files planted where the agent writes (docs/SECURITY.md, "the agent, the
//! server and the operator"), through the binaries: a symbolic link as a slot's boot-file
//! directory, as the systemd-boot entries directory or the grubenv; a link named like the
//! metrics textfile's temporary file; a removed or linked `.lock`. Each is refused naming the
//! path, or never opened, and the link's target is untouched.

use std::os::unix::fs::symlink;
use std::path::Path;

use super::airgap::tree;
use super::boot_files::{EspNode, ESP_BACKENDS};
use super::operator::{stderr_of, stdout_of, Node};

/// What lies outside the ESP for a planted link to reach: files named like boot files.
fn outside(node: &EspNode) -> std::path::PathBuf {
    let dir = node.s.path("outside");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["vmlinuz", "initrd.img", "cmdline", "keep"] {
        std::fs::write(dir.join(name), format!("not the ESP's {name}")).unwrap();
    }
    dir
}

/// Moves `esp_path` (a directory or file of the ESP) out to `outside/NAME` and links it back.
fn move_out_and_link(node: &EspNode, esp_path: &str) -> std::path::PathBuf {
    let from = node.s.path(esp_path);
    let to = node.s.path("outside").join(from.file_name().unwrap());
    std::fs::rename(&from, &to).unwrap();
    symlink(&to, &from).unwrap();
    from
}

/// `ln -s a esp/tandem/b`, `ln -s /some/dir esp/tandem/b`, a linked entries directory or
/// grubenv: an install of a UKI release is refused naming the link, and the running slot's
/// kernel and everything the link reaches stay as they were.
#[test]
fn a_link_on_the_esp_is_refused_and_nothing_it_reaches_changes() {
    for esp in ESP_BACKENDS {
        let backend_file = match esp.0 {
            "grub" => "esp/tandem/grubenv",
            _ => "esp/loader/entries",
        };
        for plant in ["b -> a", "b -> outside", backend_file] {
            let node = EspNode::new(esp);
            let outside = outside(&node);
            let link = match plant {
                "b -> a" => {
                    symlink("a", node.s.path("esp/tandem/b")).unwrap();
                    node.s.path("esp/tandem/b")
                }
                "b -> outside" => {
                    symlink(&outside, node.s.path("esp/tandem/b")).unwrap();
                    node.s.path("esp/tandem/b")
                }
                path => move_out_and_link(&node, path),
            };
            let (slot_a, reached) = (tree(&node.s.path("esp/tandem/a")), tree(&outside));
            let config = node.config("a");
            let out = node.s.run(
                "tandem-updater",
                &["--config", &config, "install", "v2-uki.tandem"],
                5,
            );
            let stderr = stderr_of(&out);
            let what = format!("{} with {plant}", esp.0);
            assert!(
                stderr.contains(&format!("{}: a symbolic link", link.display())),
                "{what}: {stderr}"
            );
            assert_eq!(tree(&node.s.path("esp/tandem/a")), slot_a, "{what}");
            assert_eq!(tree(&outside), reached, "{what}");
            if plant != backend_file {
                assert_eq!(node.boot(), "a", "{what}");
            }
        }
    }
}

/// Anyone who can write the textfile directory may plant `.tandem.prom.tmp-<pid>` as a link
/// to any file: the agent, running as root, never writes through it (random, exclusive
/// temporary names) and still publishes its metrics.
#[test]
fn a_link_planted_as_the_metrics_temporary_file_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let n = Node::new();
    let dir = n.path("textfile_collector");
    std::fs::create_dir_all(&dir).unwrap();
    let (prom, victim) = (dir.join("tandem.prom"), n.path("victim"));
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = n.config(
        "a",
        &format!(
            "reboot = [\"true\"]\nmetrics_textfile = \"{}\"\n",
            prom.display()
        ),
    );
    // The link is planted under the name the agent's pid would give, before it starts: the
    // shell `exec`s the agent, keeping its pid.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ln -s \"$1\" \"$2.tmp-$$\" && exec \"$3\" --config \"$4\" install v2.tandem")
        .arg("sh")
        .arg(&victim)
        .arg(dir.join(".tandem.prom"))
        .arg(super::cli::binary("tandem-updater"))
        .arg(&config)
        .current_dir(n.s.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("boots next as a trial"), "{out:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the link's target was chmod'ed");
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("tandem_updater_last_install_bytes_fetched"),
        "{text}"
    );
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644);
}

/// The lock is the state directory's own: removing `.lock` while an agent holds the lock
/// does not let a second one run, and a `.lock` planted as a link is never written through.
#[test]
fn a_removed_or_linked_lock_file_neither_frees_the_lock_nor_writes_its_target() {
    let n = Node::new();
    let on_a = n.config("a", "reboot = [\"true\"]\n");
    let state = n.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let held = updater::lock::StateLock::acquire(&state).unwrap();
    std::fs::remove_file(state.join(".lock")).unwrap();
    let out = n.updater(&on_a, &["install", "v2.tandem"], 9);
    assert!(
        stderr_of(&out).contains("another tandem-updater"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(n.boot(), "a");
    drop(held);

    let victim = n.path("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    symlink(&victim, state.join(".lock")).unwrap();
    let out = stdout_of(&n.updater(&on_a, &["install", "v2.tandem"], 0));
    assert!(out.contains("boots next as a trial"), "{out}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(Path::new(&victim).is_file());
}
