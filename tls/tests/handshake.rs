//! Real handshakes over loopback sockets with certificates from the dev CA: mutual
//! authentication and identities, refusals (another CA, expired, no certificate), reloading
//! on file changes without dropping established connections, and plaintext/TLS mismatches.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_tls::dev_ca::{DevCa, IssuedFiles, VALIDITY_DEFAULT};
use sluice_tls::{
    looks_like_tls, spu_name, ClientAuth, ClientStream, ClientTls, Identity, ServerStream,
    ServerTls, TlsError,
};

const TIMEOUT: Duration = Duration::from_secs(10);

struct Pki {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Pki {
    fn new() -> Pki {
        Pki::named("test CA")
    }

    fn named(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new(name).unwrap();
        ca.write_cert(&dir.path().join("ca.pem")).unwrap();
        Pki { dir, ca }
    }

    fn ca_path(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn issue(&self, stem: &str, names: &[&str]) -> IssuedFiles {
        self.ca.issue(names, VALIDITY_DEFAULT).unwrap().write(self.dir.path(), stem).unwrap()
    }
}

/// Serves one connection: handshake, then echoes every line; returns the client's identity.
fn serve_one(
    listener: TcpListener,
    tls: Arc<ServerTls>,
) -> JoinHandle<Result<Option<Identity>, TlsError>> {
    std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let mut stream = ServerStream::accept(socket, tls.config())?;
        stream.handshake(TIMEOUT)?;
        let identity = stream.peer_identity();
        let mut buffer = [0u8; 64];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if stream.write_all(&buffer[..read]).and_then(|()| stream.flush()).is_err() {
                        break;
                    }
                }
            }
        }
        Ok(identity)
    })
}

fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (listener, address)
}

fn connect(address: &str, tls: &ClientTls, name: &str) -> Result<ClientStream, TlsError> {
    let socket = TcpStream::connect(address).unwrap();
    let mut stream = ClientStream::connect(socket, tls.config(), name)?;
    stream.handshake(TIMEOUT)?;
    Ok(stream)
}

fn echo(stream: &mut ClientStream, text: &[u8]) {
    stream.write_all(text).unwrap();
    stream.flush().unwrap();
    let mut back = vec![0u8; text.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, text);
}

#[test]
fn mutual_tls_carries_bytes_and_names_both_sides() {
    let pki = Pki::new();
    let sc = pki.issue("sc", &["sc.test", "127.0.0.1"]);
    let spu = pki.issue("spu", &[&spu_name(5001, "test")]);
    let server = Arc::new(ServerTls::new(sc.server(&pki.ca_path(), ClientAuth::Required)).unwrap());
    let (listener, address) = listen();
    let served = serve_one(listener, server);
    let client = ClientTls::new(spu.client(&pki.ca_path())).unwrap();
    let mut stream = connect(&address, &client, "sc.test").unwrap();
    echo(&mut stream, b"hello over mutual TLS");
    let server_identity = stream.peer_identity().unwrap();
    assert!(server_identity.is_sc("test"));
    drop(stream);
    let client_identity = served.join().unwrap().unwrap().unwrap();
    assert!(client_identity.is_spu(5001, "test"));
    assert!(!client_identity.is_spu(5002, "test"));
    assert_eq!(client_identity.spu_ids("test"), vec![5001]);
    assert_eq!(client_identity.principal(), Some("spu-5001.test"));
}

#[test]
fn a_server_named_otherwise_is_refused_by_the_client() {
    let pki = Pki::new();
    let leader = pki.issue("leader", &[&spu_name(5001, "test")]);
    let server = Arc::new(ServerTls::new(leader.server(&pki.ca_path(), ClientAuth::None)).unwrap());
    let (listener, address) = listen();
    let served = serve_one(listener, server);
    let client =
        ClientTls::new(sluice_tls::ClientTlsFiles { ca: pki.ca_path(), cert: None, key: None })
            .unwrap();
    // The follower expected the leader to be SPU 5002.
    let error = connect(&address, &client, &spu_name(5002, "test")).err().expect("refused");
    assert!(error.to_string().contains("certificate"), "{error}");
    assert!(served.join().unwrap().is_err());
}

#[test]
fn certificates_of_another_ca_expired_or_missing_are_refused() {
    let pki = Pki::new();
    let server_files = pki.issue("server", &["127.0.0.1"]);
    let server = Arc::new(
        ServerTls::new(server_files.server(&pki.ca_path(), ClientAuth::Required)).unwrap(),
    );

    // A client certificate from another CA.
    let other = Pki::named("another CA");
    let stranger = other.issue("stranger", &["spu-5001.test"]);
    let (listener, address) = listen();
    let served = serve_one(listener, Arc::clone(&server));
    let client = ClientTls::new(sluice_tls::ClientTlsFiles {
        ca: pki.ca_path(),
        cert: Some(stranger.cert.clone()),
        key: Some(stranger.key.clone()),
    })
    .unwrap();
    let outcome = connect(&address, &client, "127.0.0.1").and_then(|mut stream| {
        // TLS 1.3: the client learns of the refusal on its first read.
        let _ = stream.write_all(b"x").and_then(|()| stream.flush());
        let mut byte = [0u8; 1];
        stream
            .read(&mut byte)
            .map_err(|source| TlsError::Handshake { peer: address.clone(), source })
    });
    assert!(!matches!(outcome, Ok(1)), "{outcome:?}");
    let error = served.join().unwrap().expect_err("the server refuses the stranger");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");

    // An expired client certificate.
    let now = time::OffsetDateTime::now_utc();
    let expired = pki
        .ca
        .issue_between(
            &["spu-5001.test"],
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        )
        .unwrap()
        .write(pki.dir.path(), "expired")
        .unwrap();
    let (listener, address) = listen();
    let served = serve_one(listener, Arc::clone(&server));
    let client = ClientTls::new(expired.client(&pki.ca_path())).unwrap();
    let _ = connect(&address, &client, "127.0.0.1").map(|mut stream| {
        let _ = stream.write_all(b"x").and_then(|()| stream.flush());
        let _ = stream.read(&mut [0u8; 1]);
    });
    let error = served.join().unwrap().expect_err("the server refuses an expired certificate");
    assert!(error.to_string().contains("certificate expired"), "{error}");

    // No client certificate where one is required.
    let (listener, address) = listen();
    let served = serve_one(listener, Arc::clone(&server));
    let anonymous =
        ClientTls::new(sluice_tls::ClientTlsFiles { ca: pki.ca_path(), cert: None, key: None })
            .unwrap();
    let _ = connect(&address, &anonymous, "127.0.0.1").map(|mut stream| {
        let _ = stream.write_all(b"x").and_then(|()| stream.flush());
        let _ = stream.read(&mut [0u8; 1]);
    });
    let error = served.join().unwrap().expect_err("a certificate is required");
    assert!(error.to_string().contains("peer sent no certificates"), "{error}");

    // Optional: the same client is let in, without an identity.
    let optional = Arc::new(
        ServerTls::new(server_files.server(&pki.ca_path(), ClientAuth::Optional)).unwrap(),
    );
    let (listener, address) = listen();
    let served = serve_one(listener, optional);
    let mut stream = connect(&address, &anonymous, "127.0.0.1").unwrap();
    echo(&mut stream, b"anonymous");
    drop(stream);
    assert_eq!(served.join().unwrap().unwrap(), None);
}

#[test]
fn rotated_files_serve_new_connections_and_established_ones_continue() {
    let pki = Pki::new();
    let files = pki.issue("server", &["127.0.0.1", "first.test"]);
    let server = Arc::new(ServerTls::new(files.server(&pki.ca_path(), ClientAuth::None)).unwrap());
    let client =
        ClientTls::new(sluice_tls::ClientTlsFiles { ca: pki.ca_path(), cert: None, key: None })
            .unwrap();
    let (listener, address) = listen();
    let first_served = serve_one(listener, Arc::clone(&server));
    let mut first = connect(&address, &client, "127.0.0.1").unwrap();
    assert_eq!(first.peer_identity().unwrap().dns_names, ["first.test"]);

    // A half-written rotation (a key of another certificate) is refused, the old one kept.
    let second = pki.ca.issue(&["127.0.0.1", "second.test"], VALIDITY_DEFAULT).unwrap();
    let third = pki.ca.issue(&["127.0.0.1", "third.test"], VALIDITY_DEFAULT).unwrap();
    std::fs::write(&files.cert, &second.cert_pem).unwrap();
    std::fs::write(&files.key, &third.key_pem).unwrap();
    std::thread::sleep(sluice_tls::RELOAD_CHECK_INTERVAL + Duration::from_millis(100));
    let names = served_names(&server, &client);
    assert_eq!(names, ["first.test"], "a mismatched key keeps the previous certificate");

    // The rotation completes: new connections get the new certificate.
    second.write(pki.dir.path(), "server").unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let names = served_names(&server, &client);
        if names == ["second.test"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {names:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The connection made before the rotation still works.
    echo(&mut first, b"still here");
    drop(first);
    first_served.join().unwrap().unwrap();
}

/// The DNS names of the certificate a fresh connection to `server` gets.
fn served_names(server: &Arc<ServerTls>, client: &ClientTls) -> Vec<String> {
    let (listener, address) = listen();
    let served = serve_one(listener, Arc::clone(server));
    let stream = connect(&address, client, "127.0.0.1").unwrap();
    let names = stream.peer_identity().unwrap().dns_names;
    drop(stream);
    served.join().unwrap().unwrap();
    names
}

#[test]
fn plaintext_and_tls_peers_recognise_each_other() {
    let pki = Pki::new();
    let files = pki.issue("server", &["127.0.0.1"]);
    let server = Arc::new(ServerTls::new(files.server(&pki.ca_path(), ClientAuth::None)).unwrap());

    // A plaintext client on a TLS port: what comes back is a TLS alert.
    let (listener, address) = listen();
    let served = serve_one(listener, server);
    let mut socket = TcpStream::connect(&address).unwrap();
    socket.write_all(&[0, 0, 0, 12, 0, 1, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0]).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reply = Vec::new();
    let _ = socket.read_to_end(&mut reply);
    assert!(looks_like_tls(&reply), "{reply:?}");
    assert!(served.join().unwrap().is_err());

    // A TLS client on a plaintext port: its first bytes are a TLS record.
    let (listener, address) = listen();
    let client =
        ClientTls::new(sluice_tls::ClientTlsFiles { ca: pki.ca_path(), cert: None, key: None })
            .unwrap();
    let connecting = std::thread::spawn(move || connect(&address, &client, "127.0.0.1").err());
    let (mut plain, _) = listener.accept().unwrap();
    let mut hello = [0u8; 5];
    plain.read_exact(&mut hello).unwrap();
    assert!(looks_like_tls(&hello), "{hello:?}");
    plain.write_all(b"\0\0\0\x08not tls!").unwrap();
    drop(plain);
    let error = connecting.join().unwrap().expect("the handshake fails");
    assert!(matches!(error, TlsError::Handshake { .. }), "{error}");
}

#[test]
fn missing_or_wrong_files_say_which() {
    let pki = Pki::new();
    let files = pki.issue("server", &["127.0.0.1"]);
    let mut missing = files.server(&pki.ca_path(), ClientAuth::None);
    missing.key = pki.dir.path().join("nope.key");
    let error = ServerTls::new(missing).unwrap_err();
    assert!(matches!(&error, TlsError::Read { what: "private key", .. }), "{error}");
    assert!(error.to_string().contains("nope.key"), "{error}");

    let mut swapped = files.server(&pki.ca_path(), ClientAuth::None);
    swapped.cert = files.key.clone();
    let error = ServerTls::new(swapped).unwrap_err();
    assert!(matches!(&error, TlsError::Empty { what: "certificate chain", .. }), "{error}");

    let mut no_ca = files.server(&pki.ca_path(), ClientAuth::Required);
    no_ca.ca = None;
    assert!(matches!(ServerTls::new(no_ca).unwrap_err(), TlsError::Incomplete(_)));
}

#[test]
fn a_ca_reloaded_from_its_key_issues_certificates_that_chain_to_the_original() {
    let pki = Pki::new();
    let key_pem = pki.ca.key_pem();
    let reloaded = DevCa::from_key_pem("test CA", &key_pem).unwrap();
    let server = reloaded
        .issue(&["localhost"], VALIDITY_DEFAULT)
        .unwrap()
        .write(pki.dir.path(), "server")
        .unwrap();
    let client = pki.issue("client", &["client-a"]);
    let server_tls =
        Arc::new(ServerTls::new(server.server(&pki.ca_path(), ClientAuth::Required)).unwrap());
    let (listener, address) = listen();
    let served = serve_one(listener, server_tls);
    let client_tls = ClientTls::new(client.client(&pki.ca_path())).unwrap();
    let mut stream = connect(&address, &client_tls, "localhost").unwrap();
    echo(&mut stream, b"hello");
    drop(stream);
    let identity = served.join().unwrap().unwrap().unwrap();
    assert_eq!(identity.principal(), Some("client-a"));
}
