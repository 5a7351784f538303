//! ACL tokens, HTTPS through rustls, and configuration from the environment, against real
//! agents.

mod harness;

use sluice_kvstore_consul::testing::ConsulAgent;
use sluice_kvstore_consul::{ConsulClient, ConsulConfig, ConsulError, TlsConfig};

const MASTER_TOKEN: &str = "4f1c9a52-1d2e-4c8b-9a57-3b0d5e1f7a21";

#[test]
fn acl_denies_without_a_token_and_allows_with_one() {
    let agent = ConsulAgent::builder()
        .acl_master_token(MASTER_TOKEN)
        .start()
        .unwrap_or_else(|error| panic!("{error}"));
    let anonymous = ConsulClient::new(ConsulConfig::new(agent.http_address())).unwrap();
    let error = anonymous.kv_put("secret", b"v").unwrap_err();
    assert!(matches!(error, ConsulError::PermissionDenied { .. }), "{error:?}");
    assert!(error.to_string().contains("Permission denied"), "{error}");
    assert!(!error.is_retriable());
    let error = anonymous.kv_get("secret").unwrap_err();
    assert!(error.to_string().contains("Permission denied"), "{error}");

    let wrong =
        ConsulClient::new(ConsulConfig::new(agent.http_address()).with_token("not-a-token"))
            .unwrap();
    let error = wrong.kv_put("secret", b"v").unwrap_err();
    assert!(matches!(error, ConsulError::PermissionDenied { .. }), "{error:?}");
    assert!(error.to_string().contains("ACL not found"), "{error}");

    let allowed =
        ConsulClient::new(ConsulConfig::new(agent.http_address()).with_token(MASTER_TOKEN))
            .unwrap();
    allowed.kv_put("secret", b"v").unwrap();
    assert_eq!(allowed.kv_get("secret").unwrap().expect("written").value, b"v");
    assert_eq!(allowed.kv_get("absent").unwrap(), None);
}

/// The environment names the agent and the token, as for the `consul` CLI. (The only test in
/// this binary that touches the environment.)
#[test]
fn address_and_token_come_from_the_environment() {
    let agent = ConsulAgent::builder()
        .acl_master_token(MASTER_TOKEN)
        .start()
        .unwrap_or_else(|error| panic!("{error}"));
    let address = agent.http_address().trim_start_matches("http://").to_string();
    std::env::set_var("CONSUL_HTTP_ADDR", &address);
    std::env::set_var("CONSUL_HTTP_TOKEN", MASTER_TOKEN);
    let client = ConsulClient::from_env().unwrap();
    assert_eq!(client.base_url(), agent.http_address());
    client.kv_put("from-env", b"yes").unwrap();
    // Configuration wins over CONSUL_HTTP_ADDR; the token still comes from the environment.
    let config = ConsulConfig::from_address_or_env(Some("10.0.0.1:8500")).unwrap();
    assert_eq!(config.address, "10.0.0.1:8500");
    assert_eq!(config.token.as_deref(), Some(MASTER_TOKEN));
    std::env::remove_var("CONSUL_HTTP_TOKEN");
    let anonymous = ConsulClient::from_env().unwrap();
    assert!(matches!(anonymous.kv_get("from-env"), Err(ConsulError::PermissionDenied { .. })));
    std::env::remove_var("CONSUL_HTTP_ADDR");
}

#[test]
fn https_with_the_agent_ca_and_refusal_without_it() {
    let agent = ConsulAgent::builder().tls().start().unwrap_or_else(|error| panic!("{error}"));
    let config = agent.https_config().expect("TLS agent");
    assert!(config.address.starts_with("https://127.0.0.1:"));
    let client = ConsulClient::new(config).unwrap();
    client.kv_put("over-tls", b"encrypted").unwrap();
    assert_eq!(client.kv_get("over-tls").unwrap().expect("written").value, b"encrypted");
    assert!(client.status_leader().unwrap().is_some());

    // Without the agent's CA (public web roots only) the certificate is rejected.
    let https_address = agent.https_address().expect("TLS agent");
    let untrusting = ConsulClient::new(ConsulConfig::new(https_address.clone())).unwrap();
    let error = untrusting.kv_get("over-tls").unwrap_err();
    assert!(matches!(error, ConsulError::TlsHandshake { .. }), "{error:?}");
    assert!(error.to_string().to_ascii_lowercase().contains("certificate"), "{error}");

    // A CA bundle that is not PEM is a configuration error.
    let bad = ConsulConfig::new(https_address).with_tls(TlsConfig {
        ca_certificates_pem: Some(b"not a certificate".to_vec()),
        ..TlsConfig::default()
    });
    assert!(matches!(ConsulClient::new(bad), Err(ConsulError::Config { .. })));
}

#[test]
fn mutual_tls_requires_the_client_certificate() {
    let agent = ConsulAgent::builder()
        .tls_verify_clients()
        .start()
        .unwrap_or_else(|error| panic!("{error}"));
    let https_address = agent.https_address().expect("TLS agent");
    let tls = agent.client_tls_config().expect("client certificate");
    assert!(tls.client_certificate_pem.is_some() && tls.client_key_pem.is_some());
    let client = ConsulClient::new(ConsulConfig::new(https_address.clone()).with_tls(tls)).unwrap();
    client.kv_put("mutual", b"ok").unwrap();
    assert_eq!(client.kv_get("mutual").unwrap().expect("written").value, b"ok");

    // Trusting the server but presenting no certificate: the agent refuses the handshake.
    let server_only = agent.https_config().expect("TLS agent");
    let error = ConsulClient::new(server_only).unwrap().kv_get("mutual").unwrap_err();
    // rustls reports the agent's alert, e.g. "received fatal alert: BadCertificate".
    assert!(matches!(error, ConsulError::TlsHandshake { .. }), "{error:?}");
    assert!(error.to_string().to_ascii_lowercase().contains("certificate"), "{error}");
    assert!(!error.is_retriable());

    // A certificate without its key is a configuration error.
    let mut half = agent.client_tls_config().expect("client certificate");
    half.client_key_pem = None;
    let config = ConsulConfig::new(https_address).with_tls(half);
    assert!(matches!(ConsulClient::new(config), Err(ConsulError::Config { .. })));
}
