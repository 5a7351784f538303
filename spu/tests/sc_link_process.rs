//! The real `sluice-spu` binary without an SC: it keeps serving produce and fetch for the
//! replicas it was assigned while no SC runs, and registers again once an SC is back on the
//! address it knows (the SC link reconnecting with backoff).
//!
//! Uses the SPU process harness of `process_common` (an in-process SC on the embedded store,
//! the SPU as a child process, both from `sluice_testkit::process`).

mod process_common;

use process_common::{batch, wait_for, Cluster, EmbeddedSc, SpuClient, SPU_ID};
use sluice_proto::api::produce::Acks;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::{Offset, SpuId};
use sluice_proto::object::SpuResolution;
use sluice_sc::config::ScArgs;

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(since_epoch.as_millis()).unwrap()
}

#[test]
fn spu_serves_while_no_sc_runs_and_registers_again() {
    let Cluster { spu, sc, dir, .. } = Cluster::start(1);
    let topic = {
        let name = sluice_proto::object::TopicName::new("steady").unwrap();
        let created = sc
            .admin()
            .create_topic(name.clone(), sluice_proto::object::TopicSpec::computed(1, 1))
            .unwrap();
        assert!(created.error_code.is_ok(), "{created:?}");
        name
    };
    let mut client = SpuClient::connect(spu.public_address);
    wait_for("the SPU to lead the partition", || {
        let outcome = client.produce(&topic, 0, &batch(&[b"first"], 1_000), Acks::Leader);
        (outcome.error_code == ErrorCode::None).then_some(())
    });

    // No SC at all: the data path does not notice.
    let private_address = sc.private_address;
    drop(sc);
    for index in 0..10u8 {
        let value = [b'v', index];
        let outcome = client.produce(&topic, 0, &batch(&[&value], 2_000), Acks::Leader);
        assert_eq!(outcome.error_code, ErrorCode::None, "produce without an SC");
    }
    let fetched = client.fetch_values(&topic, 0, Offset(0), 11);
    assert_eq!(fetched.len(), 11, "every record readable without an SC");
    assert_eq!(fetched[0].1, b"first");

    // An SC comes back on the address the SPU knows: the SPU registers again.
    let args = ScArgs {
        private_address: Some(private_address),
        heartbeat_timeout_ms: Some(3_000),
        ..EmbeddedSc::args(&dir.path().join("sc"))
    };
    let restarted_at_ms = now_ms();
    let sc = EmbeddedSc::start_with(args);
    let mut admin = sc.admin();
    wait_for("the SPU registered again", || {
        let spus = admin.list_spus().ok()?.spus;
        let spu = spus.into_iter().find(|spu| spu.spec.id == SpuId(SPU_ID))?;
        let heard_since = spu.status.last_heartbeat?.get() >= restarted_at_ms;
        (spu.status.resolution == SpuResolution::Online && heard_since).then_some(())
    });
    let outcome = client.produce(&topic, 0, &batch(&[b"after"], 3_000), Acks::Leader);
    assert_eq!(outcome.error_code, ErrorCode::None);
    assert_eq!(outcome.base_offset, Some(Offset(11)));
    sc.stop();
    drop(spu);
}
