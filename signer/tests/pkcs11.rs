//! Keys in a PKCS#11 token, against a real SoftHSM2 token (Debian's `softhsm2`; keys made and
//! exported with `pkcs11-tool` from `opensc`; a missing tool fails the test): a token key signs
//! bundles, channels, roots and signing requests through `pkcs11:` URIs, counts with file keys
//! in one k-of-n threshold, and every way of naming an unusable key fails with its cause.

use std::process::Command;

use signer::files::read_public_key;

use crate::util::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234";

/// A directory with its own SoftHSM2 token `tandem` (user PIN 1234) holding an Ed25519 key
/// pair `release-hsm` (id 01, public half exported to `hsm.pub.pem`) and a P-256 key pair
/// `ecdsa` (id 02); every run of the signer sees that token through SOFTHSM2_CONF.
fn token() -> Dir {
    let mut d = Dir::new();
    std::fs::create_dir(d.path("tokens")).unwrap();
    let conf = d.path("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            d.path("tokens").display()
        ),
    )
    .unwrap();
    d.env
        .push(("SOFTHSM2_CONF".into(), conf.display().to_string()));
    tool(
        &d,
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            "tandem",
            "--pin",
            PIN,
            "--so-pin",
            "5678",
        ],
    );
    keypair(&d, "EC:edwards25519", "release-hsm", "01");
    keypair(&d, "EC:prime256v1", "ecdsa", "02");
    let pem = tool(
        &d,
        "pkcs11-tool",
        &[
            "--module",
            MODULE,
            "--token-label",
            "tandem",
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            "release-hsm",
        ],
    );
    std::fs::write(d.path("hsm.pub.pem"), pem).unwrap();
    d
}

fn keypair(d: &Dir, key_type: &str, label: &str, id: &str) {
    tool(
        d,
        "pkcs11-tool",
        &[
            "--module",
            MODULE,
            "--token-label",
            "tandem",
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            key_type,
            "--label",
            label,
            "--id",
            id,
        ],
    );
}

/// Runs a token tool in `d` with the token's configuration; its stdout.
fn tool(d: &Dir, program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .envs(d.env.iter().map(|(k, v)| (k, v)))
        .current_dir(d.tmp.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("`{program}` is required for this test (apt-get install softhsm2 opensc): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The token's Ed25519 key, the module and PIN in the URI.
fn hsm_key() -> String {
    format!("pkcs11:token=tandem;object=release-hsm?pin-value={PIN}&module-path={MODULE}")
}

/// A token with a root (`root.pem`, 1 of 1) whose release role is 2 of: the token key (its
/// exported public key), `r2` and `r3` (key files); and an image.
fn setup() -> Dir {
    let d = token();
    for k in ["root", "r2", "r3"] {
        d.ok(&["keygen", "--out", k]);
    }
    d.init_root(&["hsm.pub.pem", "r2.pub.pem", "r3.pub.pem"], "2", &[]);
    std::fs::write(d.path("img"), sparse_image(200_003, 5)).unwrap();
    d
}

/// `sign` into `b.tandem` with `keys` (files or token URIs).
fn sign_with<'a>(keys: &[&'a str]) -> Vec<&'a str> {
    sign_args("b.tandem", keys, &[])
}

fn hsm_id(d: &Dir) -> String {
    read_public_key(&d.path("hsm.pub.pem"))
        .unwrap()
        .id()
        .to_hex()
}

#[test]
fn a_token_key_and_a_file_key_meet_a_2_of_3_threshold_for_a_bundle_and_a_channel() {
    let d = setup();
    let hsm = hsm_key();
    let out = stdout(&d.ok(&sign_with(&[&hsm, "r2.pem"])));
    // The key id the token signs under is the one of the public key exported from it.
    assert!(out.contains(&format!("signed by {}", hsm_id(&d))), "{out}");
    let ok = stdout(&d.ok(&["verify", "b.tandem", "--root", "root.json"]));
    assert!(ok.starts_with("valid: os 1.0.0"), "{ok}");

    // The channel, signed by the same pair: publish checks its threshold against the root.
    d.ok(&[
        "publish",
        "--repo",
        "repo",
        "--channel",
        "stable",
        "b.tandem",
        "--root",
        "root.json",
        "--key",
        &hsm,
        "--key",
        "r3.pem",
    ]);
    let channel: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path("repo/channels/stable.json")).unwrap())
            .unwrap();
    let signers: Vec<&str> = channel["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["keyid"].as_str().unwrap())
        .collect();
    assert!(signers.contains(&hsm_id(&d).as_str()), "{signers:?}");
    assert_eq!(signers.len(), 2);
}

#[test]
fn a_token_key_alone_is_one_vote_and_add_signature_completes_it() {
    let d = setup();
    // Module and PIN from the environment, the PIN file form too.
    std::fs::write(d.path("pin"), format!("{PIN}\n")).unwrap();
    let mut d = d;
    d.env.push(("TANDEM_PKCS11_MODULE".into(), MODULE.into()));
    d.ok(&sign_with(&[
        "pkcs11:object=release-hsm?pin-source=file:pin",
    ]));
    let err = stderr(&d.fails(&["verify", "b.tandem", "--root", "root.json"]));
    assert!(err.contains("1 of 2 release keys"), "{err}");
    d.env.push(("TANDEM_PKCS11_PIN".into(), PIN.into()));
    // The same token key again is refused; a file key completes the threshold.
    let again = stderr(&d.fails(&["add-signature", "b.tandem", "--key", "pkcs11:id=%01"]));
    assert!(again.contains("already signed"), "{again}");
    d.ok(&["add-signature", "b.tandem", "--key", "r2.pem"]);
    d.ok(&["verify", "b.tandem", "--root", "root.json"]);
}

#[test]
fn a_token_root_key_signs_roots_and_a_token_key_signs_requests() {
    let d = setup();
    let hsm = hsm_key();
    d.ok(&[
        "root",
        "init",
        "-o",
        "hsm-root.json",
        "--root-key",
        "hsm.pub.pem",
        "--root-key",
        "root.pub.pem",
        "--root-threshold",
        "2",
        "--release-key",
        "r2.pub.pem",
        "--release-threshold",
        "1",
        "--sign-with",
        &hsm,
        "--allow-partial",
    ]);
    d.fails(&["root", "verify", "hsm-root.json"]);
    d.ok(&["root", "sign", "hsm-root.json", "--key", "root.pem"]);
    d.ok(&["root", "verify", "hsm-root.json"]);

    // An unsigned bundle signed on "another machine" through a request, by the token.
    d.ok(&sign_with(&["r3.pem"]));
    d.ok(&["request", "b.tandem", "-o", "b.req"]);
    let out = stdout(&d.ok(&["sign-request", "b.req", "--key", &hsm, "-o", "b.sig"]));
    assert_eq!(out.trim(), format!("signed by {}", hsm_id(&d)));
    d.ok(&[
        "add-signature",
        "b.tandem",
        "--signature",
        "b.sig",
        "--root",
        "root.json",
    ]);
    d.ok(&["verify", "b.tandem", "--root", "root.json"]);
}

/// Signing with `uri` fails with exit status 1, nothing written, and an error containing each
/// of `causes`.
fn refused(d: &Dir, uri: &str, causes: &[&str]) {
    let err = stderr(&d.fails(&sign_with(&[uri])));
    for cause in causes {
        assert!(err.contains(cause), "{uri}: expected `{cause}` in\n{err}");
    }
    assert!(!d.path("b.tandem").exists(), "{uri}: a bundle was written");
}

#[test]
fn unusable_token_keys_are_refused_naming_the_cause() {
    let d = setup();
    let uri = |path: &str, query: &str| format!("pkcs11:token=tandem;{path}?{query}");
    let module = format!("module-path={MODULE}");
    let pin = format!("pin-value={PIN}");
    refused(
        &d,
        &uri("object=release-hsm", &pin),
        &["no PKCS#11 module", "TANDEM_PKCS11_MODULE"],
    );
    refused(
        &d,
        &uri(
            "object=release-hsm",
            &format!("{pin}&module-path=/nonexistent/p11.so"),
        ),
        &[
            "cannot load the PKCS#11 module /nonexistent/p11.so",
            "No such file",
        ],
    );
    refused(
        &d,
        &uri("object=release-hsm", &format!("pin-value=9999&{module}")),
        &["wrong PIN for token `tandem`"],
    );
    refused(
        &d,
        &uri("object=release-hsm", &module),
        &["token `tandem` needs a PIN", "pin-source"],
    );
    refused(
        &d,
        &uri("object=no-such-key", &format!("{pin}&{module}")),
        &[
            "no private key matches",
            "object=no-such-key",
            "--list-objects",
        ],
    );
    refused(
        &d,
        &uri("object=ecdsa", &format!("{pin}&{module}")),
        &["object=ecdsa", "CKK_EC key, not an Ed25519 key"],
    );
    refused(
        &d,
        &format!("pkcs11:token=other;object=release-hsm?{pin}&{module}"),
        &["no token matches", "tokens present: tandem"],
    );
    refused(
        &d,
        &uri("object=release-hsm;slot-id=1", &module),
        &["unsupported attribute `slot-id`"],
    );
    // The PIN never shows in a message.
    let err = stderr(&d.fails(&sign_with(&[&uri(
        "object=no-such-key",
        &format!("{pin}&{module}"),
    )])));
    assert!(
        !err.contains(&pin) && err.contains("pin-value=***&"),
        "{err}"
    );
}

#[test]
fn a_key_file_named_like_a_uri_is_reached_by_its_path() {
    let d = setup();
    std::fs::copy(d.path("r2.pem"), d.path("pkcs11:r2.pem")).unwrap();
    d.ok(&sign_with(&["./pkcs11:r2.pem", "r3.pem"]));
    d.ok(&["verify", "b.tandem", "--root", "root.json"]);
}

#[test]
fn two_keys_of_one_token_sign_in_one_command() {
    let mut d = setup();
    keypair(&d, "EC:edwards25519", "second", "03");
    d.env.push(("TANDEM_PKCS11_MODULE".into(), MODULE.into()));
    d.env.push(("TANDEM_PKCS11_PIN".into(), PIN.into()));
    // The module is initialised and the token logged in once for both keys.
    let out = stdout(&d.ok(&sign_with(&[
        "pkcs11:object=release-hsm",
        "pkcs11:object=second",
    ])));
    assert_eq!(out.matches("signed by").count(), 2, "{out}");
    let json: serde_json::Value =
        serde_json::from_slice(&d.ok(&["inspect", "--json", "b.tandem"]).stdout).unwrap();
    assert_eq!(json["signers"].as_array().unwrap().len(), 2, "{json}");
    // The same token key under two URIs is still one key.
    std::fs::remove_file(d.path("b.tandem")).unwrap();
    let err = stderr(&d.fails(&sign_with(&["pkcs11:object=release-hsm", "pkcs11:id=%01"])));
    assert!(err.contains("given more than once"), "{err}");
}

#[test]
fn a_pin_misspelt_misplaced_or_in_a_file_never_shows_in_messages() {
    let d = setup();
    let secret = "987654";
    std::fs::write(d.path("pin"), format!("{secret}\n")).unwrap();
    let module = format!("module-path={MODULE}");
    for uri in [
        format!("pkcs11:token=tandem;object=release-hsm?PIN-VALUE={secret}&{module}"),
        format!("pkcs11:token=tandem;object=release-hsm?pin%2Dvalue={secret}&{module}"),
        format!("pkcs11:token=tandem;object=release-hsm;PIN-VALUE={secret}?{module}"),
        format!("pkcs11:token=tandem;object=release-hsm?{secret}&{module}"),
        // A wrong PIN read from a file, and a key that is not there with a good one.
        format!("pkcs11:token=tandem;object=release-hsm?pin-source=file:pin&{module}"),
        format!("pkcs11:token=tandem;object=nothing?pin-value={secret}&{module}"),
    ] {
        let out = d.fails(&sign_with(&[&uri]));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains(secret), "{uri}: the PIN shows in\n{all}");
        let named = all.contains("pkcs11:token=tandem;object=") || all.contains("token `tandem`");
        assert!(
            named,
            "{uri}: the error names neither the URI nor the token\n{all}"
        );
    }
}
