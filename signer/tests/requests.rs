//! Signing across machines: `request` on the build machine, `sign-request` on offline signers
//! holding one key each, `add-signature --signature` back on the build machine. Signature
//! files for another bundle, altered ones and keys outside the release role are refused.

use std::path::Path;

use crate::util::*;

/// Three "machines": `build` has the bundle, root.json and public keys only; `s1`, `s2` and
/// `s3` hold release keys r1, r2 and r3 (threshold 2 of 3).
struct Machines {
    build: Dir,
    signers: [Dir; 3],
}

fn machines() -> Machines {
    let signers = [Dir::new(), Dir::new(), Dir::new()];
    let build = Dir::new();
    build.ok(&["keygen", "--out", "root"]);
    for (i, s) in signers.iter().enumerate() {
        let name = format!("r{}", i + 1);
        s.ok(&["keygen", "--out", &name]);
        let public = format!("{name}.pub.pem");
        std::fs::copy(s.path(&public), build.path(&public)).unwrap();
    }
    build.init_root_2_of_3(&[]);
    // The root key signed the root ceremony and leaves the build machine.
    std::fs::remove_file(build.path("root.pem")).unwrap();
    std::fs::write(build.path("img"), sparse_image(2_000_001, 5)).unwrap();
    Machines { build, signers }
}

fn build_bundle(d: &Dir, version: &str, out: &str) {
    d.ok(&sign_version_args(
        version,
        "4",
        out,
        &[],
        &["--level", "1"],
    ));
}

fn copy(from: &Dir, to: &Dir, name: &str) {
    std::fs::copy(from.path(name), to.path(name)).unwrap();
}

/// Carries the request to signer `i`, signs it there, brings the signature back as `sig_i`.
fn sign_on(m: &Machines, i: usize, req: &str) -> String {
    let s = &m.signers[i];
    copy(&m.build, s, req);
    let out = s.ok(&[
        "sign-request",
        req,
        "--key",
        &format!("r{}.pem", i + 1),
        "-o",
        "sig",
    ]);
    let shown = stderr(&out);
    for what in [
        "product          os",
        "version          1.0.0",
        "security version 4",
        "image            2000001 bytes, sha256",
        "created",
    ] {
        assert!(shown.contains(what), "{what} missing from {shown}");
    }
    let back = format!("sig_{}", i + 1);
    std::fs::copy(s.path("sig"), m.build.path(&back)).unwrap();
    back
}

fn no_private_keys(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().all(|e| {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        !name.ends_with(".pem") || name.ends_with(".pub.pem")
    })
}

#[test]
fn a_two_of_three_release_is_signed_on_three_machines() {
    let m = machines();
    build_bundle(&m.build, "1.0.0", "b.tandem");
    let wrote = stdout(&m.build.ok(&["request", "b.tandem", "-o", "req"]));
    // The one name the tools and docs/signing.md give the digest a signer compares.
    let inspect = stdout(&m.build.ok(&["inspect", "b.tandem"]));
    let sha = inspect
        .lines()
        .find_map(|l| l.strip_prefix("manifest sha256  "))
        .unwrap();
    assert!(wrote.contains(&format!("manifest sha256 {sha}")), "{wrote}");
    let shown = stderr(&m.signers[0].ok(&{
        copy(&m.build, &m.signers[0], "req");
        ["sign-request", "req", "--key", "r1.pem", "-o", "sig"]
    }));
    assert!(
        shown.contains(&format!("signing bundle manifest sha256 {sha}")),
        "{shown}"
    );
    let bundle_len = std::fs::metadata(m.build.path("b.tandem")).unwrap().len();
    let req_len = std::fs::metadata(m.build.path("req")).unwrap().len();
    assert!(
        req_len * 10 < bundle_len,
        "request {req_len} bytes, bundle {bundle_len}"
    );
    m.build
        .fails(&["verify", "b.tandem", "--root", "root.json"]);

    let sig1 = sign_on(&m, 0, "req");
    let sig3 = sign_on(&m, 2, "req");
    for s in &m.signers {
        assert!(
            !s.listing().iter().any(|f| f.ends_with(".tandem")),
            "{:?}",
            s.listing()
        );
    }
    assert!(
        no_private_keys(m.build.tmp.path()),
        "{:?}",
        m.build.listing()
    );
    let added = stdout(&m.build.ok(&[
        "add-signature",
        "b.tandem",
        "--signature",
        &sig1,
        "--signature",
        &sig3,
        "--root",
        "root.json",
    ]));
    assert_eq!(added.lines().count(), 2, "{added}");
    let ok = stdout(&m.build.ok(&["verify", "b.tandem", "--root", "root.json"]));
    assert!(ok.starts_with("valid: os 1.0.0"), "{ok}");
    // The same signature twice is refused, the bundle unchanged.
    let before = std::fs::read(m.build.path("b.tandem")).unwrap();
    let err = stderr(
        &m.build
            .fails(&["add-signature", "b.tandem", "--signature", &sig1]),
    );
    assert!(err.contains("already signed"), "{err}");
    assert_eq!(std::fs::read(m.build.path("b.tandem")).unwrap(), before);
}

#[test]
fn a_signature_for_another_bundle_is_refused_naming_the_file() {
    let m = machines();
    build_bundle(&m.build, "1.0.0", "a.tandem");
    build_bundle(&m.build, "1.0.1", "b.tandem");
    m.build.ok(&["request", "a.tandem", "-o", "req"]);
    let sig = sign_on(&m, 0, "req");
    let before = std::fs::read(m.build.path("b.tandem")).unwrap();
    let err = stderr(
        &m.build
            .fails(&["add-signature", "b.tandem", "--signature", &sig]),
    );
    assert!(
        err.contains("signature sig_1 refused for b.tandem") && err.contains("another bundle"),
        "{err}"
    );
    assert!(
        err.contains("hint: make the request from this very file"),
        "{err}"
    );
    assert_eq!(std::fs::read(m.build.path("b.tandem")).unwrap(), before);
}

#[test]
fn an_altered_signature_or_request_is_refused() {
    let m = machines();
    build_bundle(&m.build, "1.0.0", "b.tandem");
    m.build.ok(&["request", "b.tandem", "-o", "req"]);
    let sig = sign_on(&m, 0, "req");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.build.path(&sig)).unwrap()).unwrap();
    let flipped = match &doc["sig"].as_str().unwrap()[..1] {
        "0" => "1",
        _ => "0",
    };
    let altered = format!("{flipped}{}", &doc["sig"].as_str().unwrap()[1..]);
    doc["sig"] = altered.into();
    std::fs::write(m.build.path("bad"), serde_json::to_vec(&doc).unwrap()).unwrap();
    let before = std::fs::read(m.build.path("b.tandem")).unwrap();
    // A good signature next to the altered one is not attached either.
    let err = stderr(&m.build.fails(&[
        "add-signature",
        "b.tandem",
        "--signature",
        &sig,
        "--signature",
        "bad",
    ]));
    assert!(
        err.contains("signature bad refused") && err.contains("does not verify"),
        "{err}"
    );
    assert_eq!(std::fs::read(m.build.path("b.tandem")).unwrap(), before);

    // A request whose manifest was edited no longer matches its digest: nothing is signed.
    let mut req: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.build.path("req")).unwrap()).unwrap();
    let signed = req["signed"]
        .as_str()
        .unwrap()
        .replace(&hex_of("\"os\""), &hex_of("\"xx\""));
    req["signed"] = signed.into();
    let s = &m.signers[1];
    std::fs::write(s.path("req"), serde_json::to_vec(&req).unwrap()).unwrap();
    let err = stderr(&s.fails(&["sign-request", "req", "--key", "r2.pem", "-o", "sig"]));
    assert!(
        err.contains("request req") && err.contains("was altered"),
        "{err}"
    );
    assert!(!s.path("sig").exists());
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_key_outside_the_release_role_is_refused_against_the_root() {
    let m = machines();
    build_bundle(&m.build, "1.0.0", "b.tandem");
    m.build.ok(&["request", "b.tandem", "-o", "req"]);
    let stranger = &m.signers[0];
    stranger.ok(&["keygen", "--out", "stranger"]);
    copy(&m.build, stranger, "req");
    stranger.ok(&["sign-request", "req", "--key", "stranger.pem", "-o", "sig"]);
    copy(stranger, &m.build, "sig");
    let err = stderr(&m.build.fails(&[
        "add-signature",
        "b.tandem",
        "--signature",
        "sig",
        "--root",
        "root.json",
    ]));
    assert!(
        err.contains("signature sig refused") && err.contains("not a release key of root.json"),
        "{err}"
    );
    // Without --root it is attached, and verify does not count it, as for any untrusted key.
    m.build
        .ok(&["add-signature", "b.tandem", "--signature", "sig"]);
    let err = stderr(
        &m.build
            .fails(&["verify", "b.tandem", "--root", "root.json"]),
    );
    assert!(err.contains("threshold not met"), "{err}");
}

#[test]
fn a_root_is_signed_on_two_machines_and_its_signatures_fit_nothing_else() {
    let m = machines();
    // Root keys k1, k2 live on signers 1 and 2; the build machine has their public halves.
    for (i, s) in m.signers.iter().take(2).enumerate() {
        let name = format!("k{}", i + 1);
        s.ok(&["keygen", "--out", &name]);
        copy(s, &m.build, &format!("{name}.pub.pem"));
    }
    m.build.ok(&[
        "root",
        "init",
        "-o",
        "next.json",
        "--root-key",
        "k1.pub.pem",
        "--root-key",
        "k2.pub.pem",
        "--root-threshold",
        "2",
        "--release-key",
        "r1.pub.pem",
        "--release-threshold",
        "1",
        "--allow-partial",
    ]);
    m.build.fails(&["root", "verify", "next.json"]);
    let out = stdout(
        &m.build
            .ok(&["request", "next.json", "--document", "root", "-o", "rreq"]),
    );
    assert!(out.contains("root request"), "{out}");
    let mut back = Vec::new();
    for (i, s) in m.signers.iter().take(2).enumerate() {
        copy(&m.build, s, "rreq");
        let key = format!("k{}.pem", i + 1);
        let shown = stderr(&s.ok(&["sign-request", "rreq", "--key", &key, "-o", "rsig"]));
        assert!(
            shown.contains("signing root signed bytes sha256") && shown.contains("\"roles\""),
            "{shown}"
        );
        let name = format!("rsig_{}", i + 1);
        std::fs::copy(s.path("rsig"), m.build.path(&name)).unwrap();
        back.push(name);
    }
    // A root signature is not a bundle signature.
    build_bundle(&m.build, "1.0.0", "b.tandem");
    let err = stderr(
        &m.build
            .fails(&["add-signature", "b.tandem", "--signature", &back[0]]),
    );
    assert!(err.contains("it signs a root, not a bundle"), "{err}");
    m.build.ok(&[
        "add-signature",
        "next.json",
        "--signature",
        &back[0],
        "--signature",
        &back[1],
    ]);
    let ok = stdout(&m.build.ok(&["root", "verify", "next.json"]));
    assert!(ok.contains("valid root version 1"), "{ok}");
}

#[test]
fn a_channel_document_gets_its_second_release_signature_from_another_machine() {
    let m = machines();
    build_bundle(&m.build, "1.0.0", "b.tandem");
    m.build.ok(&["request", "b.tandem", "-o", "req"]);
    let sigs = [sign_on(&m, 0, "req"), sign_on(&m, 1, "req")];
    m.build.ok(&[
        "add-signature",
        "b.tandem",
        "--signature",
        &sigs[0],
        "--signature",
        &sigs[1],
    ]);
    // Signer 1 publishes with its key alone (below threshold), signer 2 adds the second.
    let s1 = &m.signers[0];
    copy(&m.build, s1, "b.tandem");
    copy(&m.build, s1, "root.json");
    s1.ok(&[
        "publish",
        "--repo",
        "repo",
        "--channel",
        "stable",
        "b.tandem",
        "--key",
        "r1.pem",
        "--root",
        "root.json",
        "--allow-below-threshold",
    ]);
    let doc = s1.path("repo/channels/stable.json");
    std::fs::copy(&doc, m.build.path("stable.json")).unwrap();
    m.build.ok(&[
        "request",
        "stable.json",
        "--document",
        "channel",
        "-o",
        "creq",
    ]);
    copy(&m.build, &m.signers[1], "creq");
    let shown =
        stderr(&m.signers[1].ok(&["sign-request", "creq", "--key", "r2.pem", "-o", "csig"]));
    assert!(
        shown.contains("signing channel signed bytes sha256") && shown.contains("\"stable\""),
        "{shown}"
    );
    copy(&m.signers[1], &m.build, "csig");
    // A channel signature is not a bundle signature, nor a root one.
    let err = stderr(
        &m.build
            .fails(&["add-signature", "b.tandem", "--signature", "csig"]),
    );
    assert!(err.contains("it signs a channel, not a bundle"), "{err}");
    m.build.ok(&[
        "add-signature",
        "stable.json",
        "--signature",
        "csig",
        "--root",
        "root.json",
    ]);

    let limits = signer::Limits::default();
    let now = signer::time_util::now_utc();
    let root_bytes = std::fs::read(m.build.path("root.json")).unwrap();
    let root = signer::verify::trust_root(&root_bytes, now, &limits).unwrap();
    let bytes = std::fs::read(m.build.path("stable.json")).unwrap();
    let channel = signer::verify::verify_channel(&root, &bytes, "stable", 0, now, &limits);
    assert!(channel.is_ok(), "{channel:?}");
    let before = std::fs::read(&doc).unwrap();
    assert!(signer::verify::verify_channel(&root, &before, "stable", 0, now, &limits).is_err());
}

#[test]
fn a_release_with_boot_assets_is_signed_offline() {
    let m = machines();
    for (name, bytes) in [
        ("uki.efi", uki_image(b"ID=acme\n", b"quiet\n")),
        ("vmlinuz", sparse_image(20_000, 8)),
        ("initrd.img", sparse_image(9_000, 9)),
        ("esp.img", sparse_image(70_000, 10)),
    ] {
        std::fs::write(m.build.path(name), bytes).unwrap();
    }
    let releases: [(&str, &[&str]); 3] = [
        ("uki", &["--uki", "uki.efi"]),
        (
            "kernel",
            &[
                "--kernel",
                "vmlinuz",
                "--initrd",
                "initrd.img",
                "--cmdline",
                "console=ttyS0 quiet",
            ],
        ),
        ("partition", &["--partition-image", "esp=esp.img"]),
    ];
    for (what, assets) in releases {
        let bundle = format!("{what}.tandem");
        let mut extra = vec!["--level", "1"];
        extra.extend(assets);
        m.build
            .ok(&sign_version_args("1.0.0", "4", &bundle, &[], &extra));
        m.build.ok(&["request", &bundle, "-o", "req"]);
        let sigs = [sign_on(&m, 0, "req"), sign_on(&m, 1, "req")];
        let shown =
            stderr(&m.signers[0].ok(&["sign-request", "req", "--key", "r1.pem", "-o", "s"]));
        let asset_lines = shown.matches("  boot asset       ").count();
        assert_eq!(asset_lines, assets.len() / 2, "{what}: {shown}");
        m.build.ok(&[
            "add-signature",
            &bundle,
            "--signature",
            &sigs[0],
            "--signature",
            &sigs[1],
            "--root",
            "root.json",
        ]);
        let ok = stdout(&m.build.ok(&["verify", &bundle, "--root", "root.json"]));
        assert!(ok.starts_with("valid: os 1.0.0"), "{what}: {ok}");
    }
}
