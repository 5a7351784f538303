//! The authorization decision: may this principal do this operation on this resource?
//!
//! [`Authorizer`] is a pure function over a snapshot of ACL bindings and the superusers; the
//! SC builds one from its metadata store for admin requests, each SPU core holds one built from
//! what the SC pushes, for produce (write) and fetch (read). Both answer the same way because
//! both run this code.
//!
//! ## Rules
//!
//! 1. A superuser may do everything (the bootstrap principal that creates the first ACLs).
//! 2. A binding matches a request when its principal is the request's and its resource is the
//!    request's resource, or the binding names a topic prefix that the requested topic's name
//!    starts with. A cluster binding does not match topics, nor a topic binding the cluster.
//! 3. A matching deny for the operation refuses it, whatever allows it ("deny wins").
//! 4. A matching allow for the operation allows it.
//! 5. Describe is also allowed when read, write, create, delete or alter is allowed on the same
//!    resource (rules 3 and 4 applied to that operation), unless describe itself is denied.
//! 6. Anything else is refused (no binding, no access).
//!
//! ## Invariants
//!
//! The decision depends only on the bindings as a set (order and duplicates do not matter), on
//! the superusers and on the request. It is checked against a naive reference implementation
//! over random bindings and requests in this module's tests (seeded; the seed is printed).
//! [`Authorizer::version`] names the snapshot: callers cache decisions per version.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::object::{
    AclBinding, AclOperation, AclPermission, AclResource, Principal, Sha256Digest,
};

/// The SHA-256 of a token's text: what the cluster stores and compares.
pub fn token_digest(token: &str) -> Sha256Digest {
    sha256(token.as_bytes())
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(bytes).into())
}

/// A refused request, worded for the caller: `User:alice may not write topic orders`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{principal} may not {operation} {resource}")]
pub struct Refusal {
    /// Who asked.
    pub principal: Principal,
    /// What for.
    pub operation: AclOperation,
    /// On what.
    pub resource: AclResource,
}

/// Bit of one operation in a mask.
const fn bit(operation: AclOperation) -> u8 {
    1 << operation as u8
}

/// Masks of the operations allowed and denied by the bindings matching one request.
#[derive(Clone, Copy, Debug, Default)]
struct Masks {
    allowed: u8,
    denied: u8,
}

impl Masks {
    fn permits(self, operation: AclOperation) -> bool {
        let direct = |operation: AclOperation| {
            self.allowed & bit(operation) != 0 && self.denied & bit(operation) == 0
        };
        if direct(operation) {
            return true;
        }
        operation == AclOperation::Describe
            && self.denied & bit(AclOperation::Describe) == 0
            && AclOperation::ALL
                .into_iter()
                .filter(|implying| implying.implies_describe())
                .any(direct)
    }
}

/// Decisions over one snapshot of bindings.
#[derive(Clone, Debug, Default)]
pub struct Authorizer {
    version: u64,
    superusers: Vec<Principal>,
    /// Each principal's bindings (resource, operation, permission), deduplicated.
    bindings: HashMap<Principal, Vec<(AclResource, AclOperation, AclPermission)>>,
}

impl Authorizer {
    /// An authorizer over `bindings`, where `superusers` may do everything. `version` names the
    /// snapshot (a larger one is newer).
    pub fn new(
        version: u64,
        superusers: impl IntoIterator<Item = Principal>,
        bindings: impl IntoIterator<Item = AclBinding>,
    ) -> Authorizer {
        let mut by_principal: HashMap<Principal, Vec<_>> = HashMap::new();
        for binding in bindings {
            let entry = (binding.resource, binding.operation, binding.permission);
            let list = by_principal.entry(binding.principal).or_default();
            if !list.contains(&entry) {
                list.push(entry);
            }
        }
        let mut superusers: Vec<Principal> = superusers.into_iter().collect();
        superusers.sort();
        superusers.dedup();
        Authorizer { version, superusers, bindings: by_principal }
    }

    /// The snapshot's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether `principal` is a superuser.
    pub fn is_superuser(&self, principal: &Principal) -> bool {
        self.superusers.contains(principal)
    }

    /// Whether `principal` may do `operation` on `resource` (see the module rules).
    pub fn allows(
        &self,
        principal: &Principal,
        operation: AclOperation,
        resource: &AclResource,
    ) -> bool {
        if self.is_superuser(principal) {
            return true;
        }
        let Some(bindings) = self.bindings.get(principal) else { return false };
        let mut masks = Masks::default();
        for (bound, bound_operation, permission) in bindings {
            if !covers(bound, resource) {
                continue;
            }
            match permission {
                AclPermission::Allow => masks.allowed |= bit(*bound_operation),
                AclPermission::Deny => masks.denied |= bit(*bound_operation),
            }
        }
        masks.permits(operation)
    }

    /// [`Self::allows`], or the refusal to send back.
    pub fn authorize(
        &self,
        principal: &Principal,
        operation: AclOperation,
        resource: &AclResource,
    ) -> Result<(), Refusal> {
        if self.allows(principal, operation, resource) {
            Ok(())
        } else {
            Err(Refusal { principal: principal.clone(), operation, resource: resource.clone() })
        }
    }
}

/// Whether a binding on `bound` applies to a request on `requested`.
fn covers(bound: &AclResource, requested: &AclResource) -> bool {
    match (bound, requested) {
        (AclResource::TopicPrefix(prefix), AclResource::Topic(topic)) => {
            topic.as_str().starts_with(prefix.as_str())
        }
        _ => bound == requested,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SpuId;
    use crate::object::{SpuGroupName, TopicName, TopicPrefix};

    /// SplitMix64: small, seeded, reproducible.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    const USERS: [&str; 3] = ["alice", "bob", "carol"];
    const TOPICS: [&str; 5] = ["orders", "orders-eu", "ord", "payments", "o"];
    const PREFIXES: [&str; 4] = ["o", "ord", "orders-", "pay"];

    fn principal(random: &mut Random) -> Principal {
        match random.below(USERS.len() + 1) {
            0 => Principal::Anonymous,
            index => Principal::user(USERS[index - 1]).unwrap(),
        }
    }

    fn resource(random: &mut Random, prefixes: bool) -> AclResource {
        match random.below(if prefixes { 5 } else { 4 }) {
            0 => AclResource::Cluster,
            1 => AclResource::Topic(TopicName::new(TOPICS[random.below(TOPICS.len())]).unwrap()),
            2 => AclResource::Spu(SpuId(random.below(2) as i32)),
            3 => AclResource::SpuGroup(SpuGroupName::new(["a", "b"][random.below(2)]).unwrap()),
            _ => AclResource::TopicPrefix(
                TopicPrefix::new(PREFIXES[random.below(PREFIXES.len())]).unwrap(),
            ),
        }
    }

    fn binding(random: &mut Random) -> AclBinding {
        AclBinding {
            principal: principal(random),
            resource: resource(random, true),
            operation: AclOperation::ALL[random.below(6)],
            permission: if random.below(4) == 0 {
                AclPermission::Deny
            } else {
                AclPermission::Allow
            },
        }
    }

    /// The rules read literally, over the whole list, with no index and no masks.
    fn reference(
        superusers: &[Principal],
        bindings: &[AclBinding],
        principal: &Principal,
        operation: AclOperation,
        resource: &AclResource,
    ) -> bool {
        if superusers.iter().any(|superuser| superuser == principal) {
            return true;
        }
        let matches = |binding: &AclBinding, wanted: AclOperation, permission: AclPermission| {
            let resource_matches = match (&binding.resource, resource) {
                (AclResource::TopicPrefix(prefix), AclResource::Topic(topic)) => {
                    topic.as_str().len() >= prefix.as_str().len()
                        && &topic.as_str()[..prefix.as_str().len()] == prefix.as_str()
                }
                (bound, requested) => bound == requested,
            };
            &binding.principal == principal
                && resource_matches
                && binding.operation == wanted
                && binding.permission == permission
        };
        let denied = |wanted| bindings.iter().any(|b| matches(b, wanted, AclPermission::Deny));
        let allowed = |wanted| bindings.iter().any(|b| matches(b, wanted, AclPermission::Allow));
        let direct = |wanted| allowed(wanted) && !denied(wanted);
        if direct(operation) {
            return true;
        }
        if operation != AclOperation::Describe || denied(AclOperation::Describe) {
            return false;
        }
        [
            AclOperation::Read,
            AclOperation::Write,
            AclOperation::Create,
            AclOperation::Delete,
            AclOperation::Alter,
        ]
        .into_iter()
        .any(direct)
    }

    fn run_seed(seed: u64) {
        let mut random = Random(seed);
        let count = random.below(24);
        let bindings: Vec<AclBinding> = (0..count).map(|_| binding(&mut random)).collect();
        let superusers: Vec<Principal> =
            (0..random.below(2)).map(|_| principal(&mut random)).collect();
        // Order and duplicates must not matter: build from a shuffled list with repeats.
        let mut shuffled = bindings.clone();
        shuffled.extend(bindings.iter().take(random.below(count + 1)).cloned());
        for index in (1..shuffled.len()).rev() {
            shuffled.swap(index, random.below(index + 1));
        }
        let authorizer = Authorizer::new(seed, superusers.clone(), shuffled);
        for _ in 0..64 {
            let who = principal(&mut random);
            let operation = AclOperation::ALL[random.below(6)];
            let what = resource(&mut random, false);
            let expected = reference(&superusers, &bindings, &who, operation, &what);
            assert_eq!(
                authorizer.allows(&who, operation, &what),
                expected,
                "seed {seed}: {who} {operation} {what} with {bindings:?}, superusers \
                 {superusers:?}"
            );
            assert_eq!(authorizer.authorize(&who, operation, &what).is_ok(), expected);
        }
    }

    #[test]
    fn agrees_with_the_reference_over_random_bindings() {
        let base = std::env::var("SLUICE_AUTHZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |elapsed| elapsed.as_nanos() as u64)
            });
        let seeds: u64 =
            std::env::var("SLUICE_AUTHZ_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
        println!("authorizer model: base seed {base}, {seeds} seeds (SLUICE_AUTHZ_SEED replays)");
        for offset in 0..seeds {
            run_seed(base.wrapping_add(offset));
        }
    }

    fn user(name: &str) -> Principal {
        Principal::user(name).unwrap()
    }

    fn topic(name: &str) -> AclResource {
        AclResource::Topic(TopicName::new(name).unwrap())
    }

    fn allow(who: &str, resource: AclResource, operation: AclOperation) -> AclBinding {
        AclBinding { principal: user(who), resource, operation, permission: AclPermission::Allow }
    }

    #[test]
    fn examples() {
        let prefix = AclResource::TopicPrefix(TopicPrefix::new("orders").unwrap());
        let mut deny = allow("alice", topic("orders-secret"), AclOperation::Read);
        deny.permission = AclPermission::Deny;
        let authorizer = Authorizer::new(
            7,
            [user("admin")],
            [
                allow("alice", prefix, AclOperation::Read),
                allow("alice", topic("payments"), AclOperation::Write),
                deny,
            ],
        );
        assert_eq!(authorizer.version(), 7);
        let alice = user("alice");
        assert!(authorizer.allows(&alice, AclOperation::Read, &topic("orders-eu")));
        assert!(authorizer.allows(&alice, AclOperation::Describe, &topic("orders-eu")));
        assert!(!authorizer.allows(&alice, AclOperation::Read, &topic("orders-secret")));
        assert!(authorizer.allows(&alice, AclOperation::Describe, &topic("payments")));
        assert!(!authorizer.allows(&alice, AclOperation::Read, &topic("payments")));
        assert!(!authorizer.allows(&alice, AclOperation::Alter, &AclResource::Cluster));
        assert!(!authorizer.allows(&Principal::Anonymous, AclOperation::Read, &topic("orders")));
        assert!(authorizer.allows(&user("admin"), AclOperation::Alter, &AclResource::Cluster));
        let refusal =
            authorizer.authorize(&alice, AclOperation::Write, &topic("orders")).unwrap_err();
        assert_eq!(refusal.to_string(), "User:alice may not write topic orders");
    }

    #[test]
    fn token_digest_is_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            token_digest("abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
