//! `sluice acl add|remove|list` and `sluice token create|revoke|list`.
//!
//! A token's text is printed once, by `token create`, and nowhere else (`token list` shows
//! names and creation times only).

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_proto::ids::SpuId;
use sluice_proto::object::{
    AclBinding, AclOperation, AclPermission, AclResource, Principal, SpuGroupName, TopicName,
    TopicPrefix,
};

use crate::args::OutputArgs;
use crate::output::{self, Table};
use crate::sc_api::ScApi;

const ACL_EXAMPLES: &str = "\
Examples:
  sluice acl add --principal User:alice --topic orders --operation write --operation read
  sluice acl add --principal User:etl --topic-prefix orders- --operation read
  sluice acl add --principal User:ops --cluster --operation alter
  sluice acl add --principal User:mallory --topic orders --operation read --deny
  sluice acl list -O json

Read, write, create, delete and alter each imply describe on the same resource. A deny binding
wins over every allow. Managing ACLs and tokens needs alter on the cluster (or a superuser,
`sluice-sc --superuser User:admin`).";

const TOKEN_EXAMPLES: &str = "\
Examples:
  sluice token create alice          # prints the token once: keep it
  SLUICE_TOKEN=slu_... sluice topic list
  sluice token list
  sluice token revoke alice          # refused from the next request on, no restart";

/// `sluice acl ...`
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allow (or, with --deny, refuse) a principal operations on a resource.
    #[command(after_help = ACL_EXAMPLES)]
    Add(AclArgs),
    /// Remove bindings added with the same flags.
    #[command(after_help = ACL_EXAMPLES)]
    Remove(AclArgs),
    /// List bindings (of one principal with --principal).
    #[command(
        after_help = "Examples:\n  sluice acl list\n  sluice acl list --principal User:alice -O json"
    )]
    List(AclListArgs),
}

/// Which resource a binding names: exactly one of the flags.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ResourceArgs {
    /// One topic.
    #[arg(long)]
    topic: Option<String>,
    /// Every topic whose name starts with this prefix.
    #[arg(long)]
    topic_prefix: Option<String>,
    /// The cluster (SPUs, SPU groups, reassignment, ACLs, tokens).
    #[arg(long)]
    cluster: bool,
    /// One SPU.
    #[arg(long)]
    spu: Option<i32>,
    /// One SPU group.
    #[arg(long)]
    spu_group: Option<String>,
}

/// `sluice acl add|remove`
#[derive(Debug, Args)]
pub struct AclArgs {
    /// `User:<name>` (a token's name or a certificate's identity) or `Anonymous`.
    #[arg(long)]
    principal: Principal,
    #[command(flatten)]
    resource: ResourceArgs,
    /// read, write, create, delete, alter or describe; repeatable.
    #[arg(long = "operation", required = true)]
    operations: Vec<AclOperation>,
    /// A deny binding (wins over any allow).
    #[arg(long)]
    deny: bool,
}

/// `sluice acl list`
#[derive(Debug, Args)]
pub struct AclListArgs {
    /// Only this principal's bindings.
    #[arg(long)]
    principal: Option<Principal>,
    #[command(flatten)]
    output: OutputArgs,
}

/// `sluice token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for `User:NAME` and print it (once: the cluster keeps only its hash).
    #[command(after_help = TOKEN_EXAMPLES)]
    Create {
        /// Its name: [a-zA-Z0-9._-], the principal is `User:NAME`.
        name: String,
    },
    /// Revoke a token: requests authenticated by it are refused from then on.
    #[command(after_help = TOKEN_EXAMPLES)]
    Revoke {
        /// Its name.
        name: String,
    },
    /// List tokens (names and creation times, no secrets).
    #[command(after_help = TOKEN_EXAMPLES)]
    List {
        #[command(flatten)]
        output: OutputArgs,
    },
}

fn resource(args: &ResourceArgs) -> anyhow::Result<AclResource> {
    Ok(if let Some(topic) = &args.topic {
        AclResource::Topic(TopicName::new(topic.as_str())?)
    } else if let Some(prefix) = &args.topic_prefix {
        AclResource::TopicPrefix(TopicPrefix::new(prefix.as_str())?)
    } else if let Some(id) = args.spu {
        AclResource::Spu(SpuId(id))
    } else if let Some(group) = &args.spu_group {
        AclResource::SpuGroup(SpuGroupName::new(group.as_str())?)
    } else {
        AclResource::Cluster
    })
}

fn bindings(args: &AclArgs) -> anyhow::Result<Vec<AclBinding>> {
    let resource = resource(&args.resource)?;
    let permission = if args.deny { AclPermission::Deny } else { AclPermission::Allow };
    Ok(args
        .operations
        .iter()
        .map(|operation| AclBinding {
            principal: args.principal.clone(),
            resource: resource.clone(),
            operation: *operation,
            permission,
        })
        .collect())
}

/// Runs `sluice acl ...`.
pub fn acl(sc: &str, command: &AclCommand) -> anyhow::Result<()> {
    let api = ScApi::connect(sc)?;
    let admin = api.cluster().admin();
    match command {
        AclCommand::Add(args) => {
            let bindings = bindings(args)?;
            admin.create_acls(bindings.clone()).context("cannot add ACLs")?;
            for binding in bindings {
                println!("added: {binding}");
            }
            Ok(())
        }
        AclCommand::Remove(args) => {
            let bindings = bindings(args)?;
            admin.delete_acls(bindings.clone()).context("cannot remove ACLs")?;
            for binding in bindings {
                println!("removed: {binding}");
            }
            Ok(())
        }
        AclCommand::List(args) => {
            let bindings = admin.list_acls(args.principal.clone()).context("cannot list ACLs")?;
            output::print(args.output.format, &bindings, || {
                let mut table = Table::new(&["PRINCIPAL", "PERMISSION", "OPERATION", "RESOURCE"]);
                for binding in &bindings {
                    table.row(vec![
                        binding.principal.to_string(),
                        format!("{:?}", binding.permission).to_lowercase(),
                        binding.operation.to_string(),
                        binding.resource.to_string(),
                    ]);
                }
                table.render()
            })
        }
    }
}

/// One token as `token list -O json` prints it.
#[derive(Debug, Serialize)]
struct TokenRow {
    name: String,
    created_ms: i64,
}

/// Runs `sluice token ...`.
pub fn token(sc: &str, command: &TokenCommand) -> anyhow::Result<()> {
    let api = ScApi::connect(sc)?;
    let admin = api.cluster().admin();
    match command {
        TokenCommand::Create { name } => {
            let token = admin
                .create_token(name)
                .with_context(|| format!("cannot create token \"{name}\""))?;
            eprintln!("token for User:{name} (shown once; use it with --token or SLUICE_TOKEN):");
            println!("{token}");
            Ok(())
        }
        TokenCommand::Revoke { name } => {
            admin.revoke_token(name).with_context(|| format!("cannot revoke token \"{name}\""))?;
            println!("revoked: {name}");
            Ok(())
        }
        TokenCommand::List { output: format } => {
            let tokens: Vec<TokenRow> = admin
                .list_tokens()
                .context("cannot list tokens")?
                .into_iter()
                .map(|info| TokenRow { name: info.name.to_string(), created_ms: info.created_ms.0 })
                .collect();
            output::print(format.format, &tokens, || {
                let mut table = Table::new(&["NAME", "PRINCIPAL", "CREATED"]);
                for token in &tokens {
                    table.row(vec![
                        token.name.clone(),
                        format!("User:{}", token.name),
                        format!(
                            "{} ago",
                            crate::units::format_duration_ms(
                                u64::try_from(crate::units::now_ms() - token.created_ms)
                                    .unwrap_or(0)
                            )
                        ),
                    ]);
                }
                table.render()
            })
        }
    }
}
