//! The administration commands: `topic`, `partition`, `spu` and `spu-group`.
//!
//! Each command validates its input locally (names, settings) so that a mistake is reported
//! before any connection, then makes one SDK call. Listings print the stored objects as JSON or
//! YAML, or a summary table.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use sluice_client::{ClientError, ErrorCode};
use sluice_proto::api::admin::{PartitionEntry, SpuEntry, SpuGroupEntry, TopicEntry};
use sluice_proto::ids::SpuId;
use sluice_proto::object::{
    Endpoint, PartitionResolution, ReplicaSpec, SpuGroupName, SpuGroupSpec, SpuSpec, SpuType,
    StorageConfig, TopicName, TopicResolution, TopicSpec,
};

use crate::args::{
    ListArgs, SpuCommand, SpuGroupCommand, SpuGroupCreateArgs, SpuRegisterArgs, TopicCommand,
    TopicCreateArgs, TopicDescribeArgs,
};
use crate::output::{self, Table};
use crate::sc_api::ScApi;
use crate::units::{format_bytes, format_duration_ms};

/// How often `topic create` re-reads the topic while waiting for its partitions.
const TOPIC_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Runs a `topic` command.
pub fn topic(sc: &str, command: &TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create(args) => topic_create(sc, args),
        TopicCommand::List(args) => topic_list(sc, args),
        TopicCommand::Describe(args) => topic_describe(sc, args),
        TopicCommand::Alter(args) => crate::reassign::topic_alter(sc, args),
        TopicCommand::Delete(args) => {
            let name = topic_name(&args.name)?;
            ScApi::connect(sc)?.delete_topic(&name)?;
            println!("topic \"{name}\" deleted");
            Ok(())
        }
    }
}

/// A topic name given on the command line, checked.
pub fn topic_name(name: &str) -> anyhow::Result<TopicName> {
    TopicName::new(name).with_context(|| format!("invalid topic name {name:?}"))
}

/// The spec `topic create` sends; zero partitions / factor / segment size mean "the SC's
/// default".
pub fn topic_spec(args: &TopicCreateArgs) -> anyhow::Result<TopicSpec> {
    let retention_time_ms =
        args.retention_time.map(|duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    let spec = TopicSpec {
        replicas: ReplicaSpec::Computed {
            partitions: args.partitions.unwrap_or(0),
            replication_factor: args.replication.unwrap_or(0),
            ignore_rack: args.ignore_rack,
        },
        min_in_sync_replicas: args.min_in_sync.unwrap_or(1),
        unclean_election: args.unclean_election,
        retention_time_ms,
        retention_bytes: args.retention_bytes,
        segment_bytes: args.segment_bytes.unwrap_or(0),
        ..TopicSpec::default()
    };
    // Check what the user gave now; defaults are filled (and checked) by the SC.
    let mut check = spec.clone();
    if let ReplicaSpec::Computed { partitions, replication_factor, .. } = &mut check.replicas {
        *partitions = (*partitions).max(1);
        if *replication_factor == 0 {
            // The SC's default factor is not known here: let the SC judge min-in-sync then.
            *replication_factor = check.min_in_sync_replicas.max(1);
        }
    }
    if check.segment_bytes == 0 {
        check.segment_bytes = TopicSpec::default().segment_bytes;
    }
    check.validate().context("invalid topic settings")?;
    Ok(spec)
}

fn topic_create(sc: &str, args: &TopicCreateArgs) -> anyhow::Result<()> {
    let name = topic_name(&args.name)?;
    let spec = topic_spec(args)?;
    let api = ScApi::connect(sc)?;
    if args.dry_run {
        api.validate_topic(&name, spec)?;
        println!("topic \"{name}\" is valid (dry run: nothing created)");
        return Ok(());
    }
    if let Err(error) = api.create_topic(&name, spec) {
        let exists = error.downcast_ref::<ClientError>().and_then(ClientError::code)
            == Some(ErrorCode::TopicAlreadyExists)
            && api.list_topics()?.iter().any(|topic| topic.name == name);
        if exists {
            bail!(
                "topic \"{name}\" already exists: see it with `sluice topic describe {name}`, or \
                 delete it first with `sluice topic delete {name}`"
            );
        }
        return Err(error);
    }
    if !args.no_wait {
        wait_topic_online(&api, &name, args.wait_timeout)?;
    }
    println!("topic \"{name}\" created");
    Ok(())
}

/// Waits until the topic is provisioned and each partition's leader serves it.
fn wait_topic_online(api: &ScApi, name: &TopicName, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (topic, partitions) = api.describe_topic(name)?;
        let status = &topic.status;
        let online = partitions
            .iter()
            .filter(|partition| partition.status.resolution == PartitionResolution::Online)
            .count();
        let expected = usize::try_from(topic.spec.partition_count()).unwrap_or(usize::MAX);
        if status.resolution == TopicResolution::Provisioned && online == expected {
            return Ok(());
        }
        if status.resolution == TopicResolution::InvalidConfig {
            bail!(
                "topic \"{name}\" was refused: {}; delete it with `sluice topic delete {name}`",
                status.reason.as_deref().unwrap_or("invalid configuration")
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "topic \"{name}\" was created, but after {timeout:?} it is {} with {online} of \
                 {expected} partitions online{}; check `sluice spu list` and `sluice partition \
                 list --topic {name}`",
                snake_name(&status.resolution),
                status.reason.as_deref().map_or(String::new(), |reason| format!(" ({reason})"))
            );
        }
        std::thread::sleep(TOPIC_POLL_INTERVAL);
    }
}

fn topic_list(sc: &str, args: &ListArgs) -> anyhow::Result<()> {
    let topics = ScApi::connect(sc)?.list_topics()?;
    output::print(args.output.format, &topics, || {
        let mut table = Table::new(&[
            "NAME",
            "STATUS",
            "PARTITIONS",
            "REPLICATION",
            "RETENTION",
            "SEGMENT",
            "REASON",
        ]);
        for topic in &topics {
            table.row(topic_row(topic));
        }
        table.render()
    })
}

fn topic_row(topic: &TopicEntry) -> Vec<String> {
    let spec = &topic.spec;
    let retention = match (spec.retention_time_ms, spec.retention_bytes) {
        (None, None) => "forever".to_owned(),
        (time, bytes) => {
            let parts: Vec<String> =
                time.map(format_duration_ms).into_iter().chain(bytes.map(format_bytes)).collect();
            parts.join(" or ")
        }
    };
    vec![
        topic.name.to_string(),
        snake_name(&topic.status.resolution),
        spec.partition_count().to_string(),
        spec.replication_factor().to_string(),
        retention,
        format_bytes(spec.segment_bytes),
        topic.status.reason.clone().unwrap_or_default(),
    ]
}

/// What `topic describe -O json` prints.
#[derive(Debug, Serialize)]
pub struct TopicDescription {
    /// The topic as stored.
    pub topic: TopicEntry,
    /// Its partitions in id order.
    pub partitions: Vec<PartitionEntry>,
}

fn topic_describe(sc: &str, args: &TopicDescribeArgs) -> anyhow::Result<()> {
    let name = topic_name(&args.name)?;
    let api = ScApi::connect(sc)?;
    let (topic, partitions) = api.describe_topic(&name)?;
    let description = TopicDescription { topic, partitions };
    output::print(args.output.format, &description, || {
        let topic = &description.topic;
        let spec = &topic.spec;
        let mut table = Table::new(&["SETTING", "VALUE"]);
        let settings = [
            ("name", topic.name.to_string()),
            ("status", snake_name(&topic.status.resolution)),
            ("reason", topic.status.reason.clone().unwrap_or_default()),
            ("partitions", spec.partition_count().to_string()),
            ("replication factor", spec.replication_factor().to_string()),
            ("min in-sync replicas", spec.min_in_sync_replicas.to_string()),
            ("retention time", spec.retention_time_ms.map_or("forever".into(), format_duration_ms)),
            ("retention bytes", spec.retention_bytes.map_or("unlimited".into(), format_bytes)),
            ("segment size", format_bytes(spec.segment_bytes)),
            ("largest batch", format_bytes(u64::from(spec.batch_bytes_max))),
            ("cleanup", snake_name(&spec.cleanup_policy)),
            ("compression", snake_name(&spec.compression)),
            ("durability", snake_name(&spec.durability)),
            (
                "unclean election",
                if spec.unclean_election {
                    "allowed (may lose acknowledged records)".into()
                } else {
                    "off".into()
                },
            ),
        ];
        for (setting, value) in settings {
            if !value.is_empty() {
                table.row(vec![setting.into(), value]);
            }
        }
        let offline = crate::partition::offline_spus(&api);
        let partitions = crate::partition::table(&description.partitions, &offline);
        format!("{}\n{}", table.render(), partitions.render())
    })
}

/// A serde enum's wire name (`snake_case`), e.g. `provisioned`, for tables.
fn snake_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(serde_json::Value::Object(fields)) => {
            fields.keys().cloned().collect::<Vec<_>>().join("")
        }
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Runs an `spu` command.
pub fn spu(sc: &str, command: &SpuCommand) -> anyhow::Result<()> {
    match command {
        SpuCommand::Decommission(args) => crate::reassign::spu_decommission(sc, args),
        SpuCommand::List(args) => {
            let spus = ScApi::connect(sc)?.list_spus()?;
            output::print(args.output.format, &spus, || spu_table(&spus).render())
        }
        SpuCommand::Register(args) => {
            let spec = spu_spec(args)?;
            ScApi::connect(sc)?.register_spu(spec)?;
            println!(
                "SPU {} registered; start it with `sluice-spu --id {} --sc <SC private address>`",
                args.id, args.id
            );
            Ok(())
        }
        SpuCommand::Unregister(args) => {
            ScApi::connect(sc)?.unregister_spu(SpuId(args.id))?;
            println!("SPU {} unregistered", args.id);
            Ok(())
        }
    }
}

/// An `Endpoint` from `host:port` (`[v6]:port` too).
pub fn parse_endpoint(text: &str) -> anyhow::Result<Endpoint> {
    let invalid = || format!("invalid address {text:?}: expected host:port, e.g. 10.0.0.7:9005");
    let (host, port) = text.rsplit_once(':').with_context(invalid)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    anyhow::ensure!(!host.is_empty(), "{}", invalid());
    let port: u16 = port.parse().ok().with_context(invalid)?;
    Ok(Endpoint::new(host, port))
}

fn spu_spec(args: &SpuRegisterArgs) -> anyhow::Result<SpuSpec> {
    anyhow::ensure!(args.id >= 0, "invalid SPU id {}: ids are 0 or above", args.id);
    Ok(SpuSpec {
        id: SpuId(args.id),
        spu_type: SpuType::Custom,
        rack: args.rack.clone(),
        public_endpoint: parse_endpoint(&args.public_address)?,
        private_endpoint: parse_endpoint(&args.private_address)?,
        ..SpuSpec::default()
    })
}

fn spu_table(spus: &[SpuEntry]) -> Table {
    let mut table =
        Table::new(&["ID", "TYPE", "STATUS", "PUBLIC", "PRIVATE", "CORES", "RACK", "VERSION"]);
    for spu in spus {
        table.row(vec![
            spu.spec.id.to_string(),
            snake_name(&spu.spec.spu_type),
            snake_name(&spu.status.resolution),
            spu.spec.public_endpoint.to_string(),
            spu.spec.private_endpoint.to_string(),
            spu.status.cores.to_string(),
            spu.spec.rack.clone().unwrap_or_default(),
            spu.status.version.clone(),
        ]);
    }
    table
}

/// Runs an `spu-group` command.
pub fn spu_group(sc: &str, command: &SpuGroupCommand) -> anyhow::Result<()> {
    match command {
        SpuGroupCommand::Create(args) => {
            let (name, spec) = spu_group_spec(args)?;
            ScApi::connect(sc)?.create_spu_group(name.as_str(), spec.clone())?;
            let ids: Vec<String> = spec.spu_ids().map(|id| id.to_string()).collect();
            println!(
                "SPU group \"{name}\" created with SPUs {}; start each with `sluice-spu --id N`",
                ids.join(", ")
            );
            Ok(())
        }
        SpuGroupCommand::List(args) => {
            let groups = ScApi::connect(sc)?.list_spu_groups()?;
            output::print(args.output.format, &groups, || spu_group_table(&groups).render())
        }
        SpuGroupCommand::Delete(args) => {
            let name = spu_group_name(&args.name)?;
            ScApi::connect(sc)?.delete_spu_group(name.as_str())?;
            println!("SPU group \"{name}\" deleted");
            Ok(())
        }
    }
}

fn spu_group_name(name: &str) -> anyhow::Result<SpuGroupName> {
    SpuGroupName::new(name).with_context(|| format!("invalid SPU group name {name:?}"))
}

fn spu_group_spec(args: &SpuGroupCreateArgs) -> anyhow::Result<(SpuGroupName, SpuGroupSpec)> {
    let name = spu_group_name(&args.name)?;
    let spec = SpuGroupSpec {
        replicas: args.replicas,
        first_id: SpuId(args.first_id),
        rack: args.rack.clone(),
        storage: StorageConfig { log_dir: args.log_dir.clone(), size_bytes: args.size },
    };
    spec.validate().context("invalid SPU group settings")?;
    Ok((name, spec))
}

fn spu_group_table(groups: &[SpuGroupEntry]) -> Table {
    let mut table = Table::new(&["NAME", "REPLICAS", "FIRST ID", "RACK", "STATUS", "SPUS"]);
    for group in groups {
        let spus: Vec<String> = group.status.resolved_spus.iter().map(SpuId::to_string).collect();
        let status = match &group.status.reason {
            Some(reason) => format!("{}: {reason}", snake_name(&group.status.resolution)),
            None => snake_name(&group.status.resolution),
        };
        table.row(vec![
            group.name.to_string(),
            group.spec.replicas.to_string(),
            group.spec.first_id.to_string(),
            group.spec.rack.clone().unwrap_or_default(),
            status,
            spus.join(", "),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn create_args(line: &[&str]) -> TopicCreateArgs {
        let mut full = vec!["sluice", "topic", "create"];
        full.extend_from_slice(line);
        let cli = crate::args::Cli::try_parse_from(full).unwrap();
        let crate::args::Command::Topic(TopicCommand::Create(args)) = cli.command else {
            panic!("not topic create")
        };
        args
    }

    #[test]
    fn topic_spec_leaves_defaults_to_the_sc() {
        let spec = topic_spec(&create_args(&["t"])).unwrap();
        assert_eq!(spec.partition_count(), 0);
        assert_eq!(spec.segment_bytes, 0);
        let spec = topic_spec(&create_args(&[
            "t",
            "-p",
            "3",
            "-r",
            "2",
            "--retention-time",
            "7d",
            "--retention-bytes",
            "1GiB",
        ]))
        .unwrap();
        assert_eq!((spec.partition_count(), spec.replication_factor()), (3, 2));
        assert_eq!(spec.retention_time_ms, Some(7 * 86_400_000));
        assert_eq!(spec.retention_bytes, Some(1 << 30));
    }

    #[test]
    fn replication_settings() {
        let spec = topic_spec(&create_args(&[
            "t",
            "--replication",
            "3",
            "--min-in-sync",
            "2",
            "--unclean-election",
        ]))
        .unwrap();
        assert_eq!((spec.replication_factor(), spec.min_in_sync_replicas), (3, 2));
        assert!(spec.unclean_election);
        assert!(!topic_spec(&create_args(&["t"])).unwrap().unclean_election, "off by default");
        let error = topic_spec(&create_args(&["t", "-r", "2", "--min-in-sync", "3"])).unwrap_err();
        assert!(format!("{error:#}").contains("min_in_sync_replicas"), "{error:#}");
        assert!(topic_spec(&create_args(&["t", "--min-in-sync", "0"])).is_err());
        assert!(topic_spec(&create_args(&["t", "-r", "0"])).is_ok(), "0 means the SC's default");
    }

    #[test]
    fn topic_spec_refuses_bad_settings_locally() {
        let error = topic_spec(&create_args(&["t", "--segment-bytes", "100"])).unwrap_err();
        assert!(format!("{error:#}").contains("segment_bytes"), "{error:#}");
        assert!(topic_spec(&create_args(&["t", "-p", "100000"])).is_err());
    }

    #[test]
    fn endpoints() {
        assert_eq!(parse_endpoint("10.0.0.7:9005").unwrap(), Endpoint::new("10.0.0.7", 9005));
        assert_eq!(parse_endpoint("[::1]:9005").unwrap(), Endpoint::new("::1", 9005));
        for bad in ["nohost", ":9005", "h:port", "h:70000"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enum_names_for_tables() {
        use sluice_proto::object::{Durability, TopicResolution};
        assert_eq!(snake_name(&TopicResolution::InsufficientResources), "insufficient_resources");
        assert_eq!(snake_name(&Durability::Sync), "sync");
        let relaxed = Durability::Relaxed { flush_bytes_max: 1, flush_interval_ms: 2 };
        assert_eq!(snake_name(&relaxed), "relaxed");
    }
}
