//! Power cut at every failpoint: the process dies right after a durable step (a panic raised
//! by the failpoint, caught here), the node reboots through the reference firmware and a
//! fresh agent takes over. Whatever the cut, the firmware boots a complete signed image and
//! the agent settles: a retried install commits.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use partitions::io::{MemDisk, MemFs};
use partitions::SlotId::{A, B};
use signer::AssetKind;
use tandem_tests::{
    cut_at, failpoint_names, fake_uki, fired, recover, request, Backend, Release, TestAsset, World,
};
use updater::state::Phase;
use updater::BootCheck;

#[test]
fn power_cut_at_every_failpoint() {
    let scenario = fail::FailScenario::setup();
    let names = failpoint_names();
    assert!(names.len() >= 12, "failpoints found: {names:?}");
    let cases = cases(&names);
    let mut tried = 0;
    let mut cut_names = BTreeSet::new();
    // The GPT backend with a release that carries a partition image (written, checkpointed
    // and read back after the root image), and systemd-boot with a release that carries a
    // UKI (its boot files staged on the ESP before the flip) and a verity root (the slot's
    // PARTUUID set before the image).
    for backend in [Backend::Gpt, Backend::SystemdBoot] {
        let mut w = match backend {
            Backend::Gpt => World::with_pairs(backend, &[("data", 1 << 20)]),
            _ => World::new(backend),
        };
        let v1 = w.release("1.0.0", 1, 1);
        let v2 = match backend {
            Backend::Gpt => w.release_with_assets("2.0.0", 2, 2, &[data_image()]),
            _ => verity_release(&w),
        };
        w.provision(A, &v1);
        // The PARTUUID the verity release's root hash derives, which slot B ends with.
        let partuuid = (backend == Backend::SystemdBoot)
            .then(|| signer::verity::partuuid(&crate::verity::verity_image(2).1.root_hash));
        let factory = MemDisk::from_bytes(&w.disk_bytes());
        let factory_esp = w.boot_fs.as_ref().map(MemFs::deep_clone);
        for (name, hit, healthy) in &cases {
            w.disk = Arc::new(factory.deep_clone());
            w.state_fs = MemFs::new();
            w.boot_fs = factory_esp.as_ref().map(MemFs::deep_clone);
            w.set_healthy(*healthy);
            let flag = cut_at(name, *hit);
            let result = catch_unwind(AssertUnwindSafe(|| update_with_checkpoints(&w, &v2)));
            fail::remove(name);
            let context = format!("{backend}: cut at {name} (hit {hit}, health {healthy})");
            if !fired(&flag) {
                assert!(result.is_ok(), "{context}: failed without a cut");
                continue;
            }
            assert!(result.is_err(), "{context}: the cut did not stop the agent");
            tried += 1;
            cut_names.insert(name.clone());
            recover(&w, &v1, &v2, &context);
            if backend == Backend::Gpt {
                let data = data_image().bytes;
                let Phase::Committed { slot, .. } = w.state().phase else {
                    panic!("{context}: not committed after the recovery");
                };
                let held = w.partition_bytes("data", slot, data.len());
                assert!(held == data, "{context}: the data partition of slot {slot}");
            }
            if let Some(uuid) = partuuid {
                assert_eq!(
                    w.pair().slot(B).partuuid,
                    uuid,
                    "{context}: slot B's PARTUUID"
                );
            }
        }
    }
    let never: Vec<_> = names.iter().filter(|n| !cut_names.contains(*n)).collect();
    assert!(never.is_empty(), "failpoints never reached: {never:?}");
    println!(
        "power cut at {tried} points ({} failpoints, {} cases per backend)",
        names.len(),
        cases.len()
    );
    drop(scenario);
}

/// A partition image of five chunks for the pair `data`.
fn data_image() -> TestAsset {
    let bytes = tandem_tests::noise(5 * tandem_tests::CHUNK_SIZE as usize, 5);
    TestAsset {
        name: "data".into(),
        kind: AssetKind::Image,
        bytes,
    }
}

/// v2 with a verity root and a UKI whose fixed command line names it.
fn verity_release(w: &World) -> Release {
    let (bytes, doc) = crate::verity::verity_image(2);
    let uki = fake_uki("2.0.0", &format!("quiet roothash={}", doc.root_hash));
    let assets = [TestAsset::new(AssetKind::Uki, uki)];
    w.release_signed("2.0.0", 2, bytes, tandem_tests::PRODUCT, &assets, |o| {
        o.verity = Some(doc)
    })
}

/// Each failpoint at the hits worth cutting, with a passing and a failing health check.
fn cases(names: &[String]) -> Vec<(String, usize, bool)> {
    let mut cases = Vec::new();
    for name in names {
        let hits: &[usize] = match name.as_str() {
            // The last hits fall in the partition image, after the root image's.
            "install::chunk-written" => &[1, 2, 5, 12, 20, 23, 24, 25, 27],
            "install::after-checkpoint" => &[1, 2, 3, 5, 6, 7, 8],
            _ => &[1],
        };
        for &hit in hits {
            for healthy in [true, false] {
                cases.push((name.clone(), hit, healthy));
            }
        }
    }
    cases
}

/// Installs `v2` with a checkpoint every 4 chunks (so `install::after-checkpoint` fires
/// several times), reboots into it and judges it (and reboots again if it rolled back).
fn update_with_checkpoints(w: &World, v2: &Release) {
    let mut agent = w.agent_for(A);
    agent.write_options.checkpoint_bytes = 4 * u64::from(tandem_tests::CHUNK_SIZE);
    let out = agent.install(&request(&v2.bundle, false)).unwrap();
    assert_eq!(out.target, B);
    drop(agent);
    let slot = w.boot();
    if let BootCheck::RolledBack { .. } = w.agent_for(slot).boot_check().unwrap() {
        let slot = w.boot();
        w.agent_for(slot).boot_check().unwrap();
    }
}
