//! TLS: a nats-server with a certificate from its own CA (made here with
//! rcgen) and Baton's authorization; a broker and a subagent connect with
//! `tls://` URLs and `--tls-ca`, and run an order; a client that does not
//! trust the CA is refused with the setting to fix.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton::auth::{AuthDir, Role};
use baton::bus::{Bus, ConnectSettings, Credentials, Tls};
use baton::launch::{LocalCluster, Logs, Security};
use baton::natsd::NatsServerOptions;
use baton::protocol::*;
use common::*;

/// A CA and a server certificate for 127.0.0.1 it signed: (ca.pem, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let server =
        rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = server.signed_by(&server_key, &ca).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, server.pem()).unwrap();
    std::fs::write(&paths.2, server_key.serialize_pem()).unwrap();
    paths
}

async fn connect(url: &str, credentials: Credentials, ca: Option<PathBuf>) -> Result<Bus, String> {
    let settings = ConnectSettings {
        url: url.to_string(),
        name: "tls-test".into(),
        connect_timeout: Duration::from_secs(3),
        retry_initial_connect: false,
        max_message_bytes: 1 << 20,
        replicas: 1,
        credentials,
        tls: Tls {
            ca,
            ..Default::default()
        },
        identities: None,
    };
    let connect = Bus::connect(&settings, Subjects::new("baton"));
    within(REQUEST * 2, "connect", connect)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_and_clients_speak_tls_and_a_client_without_the_ca_is_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let auth_dir = dir.path().join("auth");
    let auth = AuthDir::init(&auth_dir, "baton", &["sub-1".into()]).unwrap();
    let authorization = std::fs::read_to_string(auth.server_conf_path()).unwrap();
    // TLS for whoever asks, plain for the harness's readiness probe
    let conf = dir.path().join("nats.conf");
    let store = dir.path().join("store");
    let text = format!(
        "jetstream {{ store_dir: {store:?} }}\ntls {{ cert_file: {cert:?}, key_file: {key:?} }}\n\
         allow_non_tls: true\n{authorization}"
    );
    std::fs::write(&conf, text).unwrap();
    let nats = NatsServerOptions {
        config_file: Some(conf),
        log_file: Some(dir.path().join("nats.log")),
        ..Default::default()
    };
    let start = LocalCluster::start(
        nats,
        PathBuf::from(env!("CARGO_BIN_EXE_baton")),
        "baton",
        Logs::Dir(dir.path().join("logs")),
        Security::Auth(auth_dir.clone()),
    );
    let mut cluster = within(Duration::from_secs(30), "start", start)
        .await
        .expect("nats-server");
    let url = format!("tls://127.0.0.1:{}", cluster.nats.port());
    let ca_arg = ca.display().to_string();
    cluster
        .spawn_via("broker", &["broker", "--tls-ca", &ca_arg], &url)
        .expect("broker");
    cluster
        .spawn_via(
            "sub-1",
            &["subagent", "--id", "sub-1", "--tls-ca", &ca_arg],
            &url,
        )
        .expect("subagent");

    let admin = Credentials::NkeyFile(auth.seed_path(Role::Admin, None));
    let bus = connect(&url, admin.clone(), Some(ca.clone()))
        .await
        .expect("TLS with the CA");
    within(
        Duration::from_secs(30),
        "sub-1",
        cluster.wait_for_subagents(&bus, 1),
    )
    .await
    .expect("the subagent registers over TLS");
    let jobs = "[[job]]\nname = \"hello\"\nprogram = \"echo\"\nargs = [\"over tls\"]\n";
    deploy(&bus, jobs).await;
    let (finished, logs) = run_to_finish(&bus, "hello", Default::default()).await;
    assert_eq!(finished.state, OrderState::Succeeded, "{finished:?}");
    assert_eq!(logs.first().map(|l| l.line.as_str()), Some("over tls"));

    // no CA: the server's certificate is not trusted, and the error says what to set
    let Err(refused) = connect(&url, admin, None).await else {
        panic!("a client that does not trust the CA connected");
    };
    assert!(
        refused.contains("TLS") && refused.contains("nats.tls_ca"),
        "{refused}"
    );
    // a CA file that is not there
    let missing = Some(dir.path().join("missing.pem"));
    let seed = Credentials::NkeyFile(auth.seed_path(Role::Client, None));
    let Err(refused) = connect(&url, seed, missing).await else {
        panic!("connected with a missing CA file");
    };
    assert!(
        refused.contains("nats.tls_ca") && refused.contains("missing.pem"),
        "{refused}"
    );
}
