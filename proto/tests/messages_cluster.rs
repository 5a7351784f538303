//! Cluster-operation messages (postcard): round trip, truncation at every byte, golden bytes.

mod common;

use sluice_proto::api::cluster::*;
use sluice_proto::error_code::ErrorCode;
use sluice_proto::ids::*;
use sluice_proto::object::*;

fn key(name: &str, partition: u32) -> PartitionKey {
    PartitionKey::new(TopicName::new(name).unwrap(), PartitionId(partition))
}

fn placement(spu: i32, core: u16) -> ReplicaPlacement {
    ReplicaPlacement { spu: SpuId(spu), core: CoreId(core) }
}

fn range(min: u32, max: u32) -> CountRange {
    CountRange { min, max }
}

message_tests!(plan_rebalance_request: PlanRebalanceRequest =
    PlanRebalanceRequest { drain: vec![SpuId(3)] }, golden "0106");
message_tests!(plan_rebalance_response: PlanRebalanceResponse = PlanRebalanceResponse {
        error_code: ErrorCode::None,
        message: None,
        moves: vec![RebalanceMove {
            key: key("t", 0),
            from: vec![placement(1, 0), placement(2, 1)],
            to: vec![placement(3, 0), placement(2, 1)],
        }],
        cores: vec![CoreBalanceChange {
            spu: SpuId(3),
            core: CoreId(0),
            replicas_before: 0,
            replicas_after: 1,
            leaders_before: 0,
            leaders_after: 1,
        }],
        before: BalanceFigures {
            replicas_per_core: range(0, 2),
            replicas_per_spu: range(0, 2),
            leaders_per_core: range(0, 1),
            leaders_per_spu: range(0, 1),
        },
        after: BalanceFigures {
            replicas_per_core: range(1, 1),
            replicas_per_spu: range(1, 1),
            leaders_per_core: range(0, 1),
            leaders_per_spu: range(0, 1),
        },
        replica_moves: 1,
        leader_changes: 1,
        replica_moves_lower_bound: 1,
    }, golden "000001017400020200040102060004010106000001000100020002000100010101010100010001010101");
message_tests!(hold_leadership_request: HoldLeadershipRequest =
    HoldLeadershipRequest { spu: SpuId(2), hold_ms: 300 }, golden "04ac02");
message_tests!(hold_leadership_response: HoldLeadershipResponse = HoldLeadershipResponse {
        error_code: ErrorCode::None,
        message: None,
        moved: vec![key("t", 0)],
        not_moved: vec![key("t", 1)],
    }, golden "00000101740001017401");
