//! `sluice --help` and every subcommand's help print and exit 0; usage errors exit 2; and a
//! command against an SC that is not there says what to do.

mod common;

use common::sluice;

/// Every command path of `sluice`, with a word its help must contain.
const COMMANDS: &[(&[&str], &str)] = &[
    (&[], "Quick start"),
    (&[], "--tls-ca"),
    (&["cluster"], "local cluster"),
    (&["cluster", "start"], "--spus"),
    (&["cluster", "status"], "--data-dir"),
    (&["cluster", "stop"], "SIGTERM"),
    (&["cluster", "spu"], "kill"),
    (&["cluster", "spu", "stop"], "SIGTERM"),
    (&["cluster", "spu", "kill"], "kill -9"),
    (&["cluster", "certs"], "--sc-host"),
    (&["cluster", "start"], "--tls"),
    (&["cluster", "rebalance"], "--dry-run"),
    (&["cluster", "rolling-restart"], "in sync"),
    (&["topic"], "describe"),
    (&["topic", "create"], "--retention-time"),
    (&["topic", "create"], "MAY LOSE ACKNOWLEDGED RECORDS"),
    (&["topic", "list"], "--output"),
    (&["topic", "describe"], "--output"),
    (&["topic", "delete"], "sluice topic delete"),
    (&["topic", "alter"], "different partition"),
    (&["partition"], "list"),
    (&["partition", "list"], "in sync"),
    (&["partition", "rebalance-leaders"], "preferred replica"),
    (&["partition", "reassign"], "--to-spus"),
    (&["spu"], "register"),
    (&["spu", "list"], "--output"),
    (&["spu", "register"], "--public-address"),
    (&["spu", "unregister"], "--id"),
    (&["spu", "decommission"], "--throttle"),
    (&["spu-group"], "create"),
    (&["spu-group", "create"], "--replicas"),
    (&["spu-group", "list"], "--output"),
    (&["spu-group", "delete"], "sluice spu-group delete"),
    (&["produce"], "--key-separator"),
    (&["consume"], "--format"),
    (&["acl"], "add"),
    (&["acl", "add"], "--principal"),
    (&["acl", "remove"], "--topic-prefix"),
    (&["acl", "list"], "--principal"),
    (&["token"], "create"),
    (&["token", "create"], "prints the token once"),
    (&["token", "revoke"], "no restart"),
    (&["token", "list"], "no secrets"),
];

#[test]
fn every_command_has_help_with_examples() {
    for (path, expected) in COMMANDS {
        let mut args: Vec<&str> = path.to_vec();
        args.push("--help");
        let run = sluice(&args);
        let shown = args.join(" ");
        assert!(run.status.success(), "`sluice {shown}` failed: {}", run.stderr);
        assert!(
            run.stdout.contains(expected),
            "`sluice {shown}` lacks {expected:?}:\n{}",
            run.stdout
        );
        let is_leaf = !path.is_empty() && !run.stdout.contains("\nCommands:");
        if is_leaf {
            assert!(
                run.stdout.contains("Example"),
                "`sluice {shown}` shows no example:\n{}",
                run.stdout
            );
        }
    }
}

#[test]
fn usage_errors_exit_with_status_2() {
    for args in
        [&["topic", "create"][..], &["consume", "t", "-B", "--offset", "1"], &["frobnicate"]]
    {
        let run = sluice(args);
        assert_eq!(run.status.code(), Some(2), "sluice {args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty());
    }
}

#[test]
fn bad_values_are_refused_before_connecting() {
    let run = sluice(&["topic", "create", "t", "--retention-time", "7 days"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(run.stderr.contains("7d"), "{}", run.stderr);
    let run = sluice(&["--sc", "127.0.0.1:1", "topic", "create", "t", "--segment-bytes", "100"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("segment_bytes is 100"), "{}", run.stderr);
    assert!(!run.stderr.contains("cannot reach"), "{}", run.stderr);
}

/// A port nothing listens on: bound by the OS, then released.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[test]
fn no_cluster_says_how_to_start_one() {
    let sc = format!("127.0.0.1:{}", free_port());
    for args in [
        vec!["--sc", &sc, "topic", "list"],
        vec!["--sc", &sc, "spu", "list", "-O", "json"],
        vec!["--sc", &sc, "consume", "t", "-B", "-d"],
    ] {
        let run = sluice(&args);
        assert_eq!(run.status.code(), Some(1), "sluice {args:?}: {}", run.stderr);
        assert!(run.stderr.contains(&sc), "sluice {args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("sluice cluster start --local"),
            "sluice {args:?}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    let produced = common::sluice_with_input(&["--sc", &sc, "produce", "t"], Some(b"x\n"));
    assert_eq!(produced.status.code(), Some(1));
    assert!(produced.stderr.contains("sluice cluster start --local"), "{}", produced.stderr);
}

#[test]
fn status_and_stop_without_a_cluster() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let dir = data_dir.path().display().to_string();
    let run = sluice(&["cluster", "status", "--data-dir", &dir]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("sluice cluster start --local"), "{}", run.stderr);
    let run = sluice(&["cluster", "stop", "--data-dir", &dir]).success("cluster stop");
    assert!(run.stderr.contains("nothing to stop"), "{}", run.stderr);
    let run = sluice(&["cluster", "start", "--data-dir", &dir]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("--local"), "{}", run.stderr);
}
