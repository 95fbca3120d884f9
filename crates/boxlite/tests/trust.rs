//! The box's CA (secret substitution) against real VMs: the agent adds it to the image's
//! CA bundles by bind mounts and names it in every command's environment, so curl,
//! Python's requests and Node's fetch trust it without flags, and a restart leaves the
//! image as it was.

use std::time::Duration;

use boxlite::{BoxCommand, BoxOptions, Error, ExitStatus, LiteBox, PortalError};
use boxlite_testkit::oci::TestImage;
use boxlite_testkit::{Registry, TestHome};

/// A throwaway P-256 test CA (`CN=boxlite trust test CA`) and a server certificate it
/// signed for `localhost` and 127.0.0.1, with that certificate's key: made once with
/// `openssl ca`, valid from 2000 to 2100 so no clock, the host's or the guest's, is
/// ever outside them. Public test material; the CA's key was not kept.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgICEAAwCgYIKoZIzj0EAwIwIDEeMBwGA1UEAwwVYm94bGl0
ZSB0cnVzdCB0ZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAw
WjAgMR4wHAYDVQQDDBVib3hsaXRlIHRydXN0IHRlc3QgQ0EwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAQmUj6MNLEMsbSx/42ijsrUxJD43aGHTv8KS+g2/Ssm7H+g
5ep4v+4s31SBFT33giMqDmyZnZ/xMbJ8Sz+OY/Ioo0UwQzASBgNVHRMBAf8ECDAG
AQH/AgEAMA4GA1UdDwEB/wQEAwIBBjAdBgNVHQ4EFgQUdwg6NVccr6b+DBZg1fik
LCaLGPUwCgYIKoZIzj0EAwIDSAAwRQIgNpqzf1ZeKtYIEoEM/nFtpiUpqA4BsvUH
QU6FRMtTVKQCIQCt/0NDuvkDZ3I+KiuZMwSWYODABJonnc/u3YfETHOmSg==
-----END CERTIFICATE-----
";

const SERVER_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBujCCAV+gAwIBAgICEAEwCgYIKoZIzj0EAwIwIDEeMBwGA1UEAwwVYm94bGl0
ZSB0cnVzdCB0ZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAw
WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AARyjjp06wD0MZr2IFDpzesk/UUxuxwK7j+LYI5sGeHjza6aOoLkOjDdeI2ED53b
HI/IJjBRf5naKaUGshOOPLZgo4GSMIGPMAwGA1UdEwEB/wQCMAAwDgYDVR0PAQH/
BAQDAgeAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMBoGA1UdEQQTMBGCCWxvY2FsaG9z
dIcEfwAAATAdBgNVHQ4EFgQUUZILKRAzlrWYYRUcTyeTUmQ4sRMwHwYDVR0jBBgw
FoAUdwg6NVccr6b+DBZg1fikLCaLGPUwCgYIKoZIzj0EAwIDSQAwRgIhALW5U/IE
gTLDfQhf/+WkTZ3fJmUrZlLH9TQ0Db3DVEtyAiEAz5V3ksx5XKwfgcmP9vFAeN1d
3XmS8eQlRLIvrsGT7BU=
-----END CERTIFICATE-----
";

const SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgA8bGiP44lNrT+M4j
fdI+kXbBDLkq+aMsdJgSrZDPc+mhRANCAARyjjp06wD0MZr2IFDpzesk/UUxuxwK
7j+LYI5sGeHjza6aOoLkOjDdeI2ED53bHI/IJjBRf5naKaUGshOOPLZg
-----END PRIVATE KEY-----
";

const DEBIAN_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const BUNDLE: &str = "/etc/boxlite/ca-bundle.crt";
const CA: &str = "/etc/boxlite/ca.crt";

/// What every command gets once the CA is installed.
const CA_ENV: [&str; 4] = [
    "SSL_CERT_FILE=/etc/boxlite/ca-bundle.crt",
    "REQUESTS_CA_BUNDLE=/etc/boxlite/ca-bundle.crt",
    "CURL_CA_BUNDLE=/etc/boxlite/ca-bundle.crt",
    "NODE_EXTRA_CA_CERTS=/etc/boxlite/ca.crt",
];

/// Python's view: its default CA file, and whether a default context trusts the test
/// CA alongside more than a hundred image roots.
const PYTHON_VIEW: &str = "import ssl
certs = ssl.create_default_context().get_ca_certs()
names = [dict(rdn[0] for rdn in c['subject']).get('commonName') for c in certs]
print(ssl.get_default_verify_paths().cafile)
print('boxlite trust test CA' in names, len(names) > 100)";

async fn boot(h: &TestHome, image: &str) -> (boxlite::Boxlite, LiteBox) {
    let rt = h.runtime();
    let b = rt.create(BoxOptions::new(image)).await.unwrap();
    b.start().await.unwrap();
    (rt, b)
}

async fn teardown(rt: boxlite::Boxlite, b: LiteBox) {
    b.stop(Duration::from_secs(10)).await.unwrap();
    rt.remove(&b, false).await.unwrap();
}

use boxlite_testkit::stdout_ok as out;

fn sh(script: &str) -> BoxCommand {
    BoxCommand::new("sh").args(["-c", script])
}

fn cat(path: &str) -> BoxCommand {
    BoxCommand::new("cat").arg(path)
}

/// The lines of `env` that name the CA, in [`CA_ENV`] order.
fn ca_vars(env: &str) -> Vec<&str> {
    let mut vars: Vec<&str> = env
        .lines()
        .filter(|l| {
            CA_ENV
                .iter()
                .any(|v| v.split('=').next() == l.split('=').next())
        })
        .collect();
    vars.sort_by_key(|l| {
        CA_ENV
            .iter()
            .position(|v| v.split('=').next() == l.split('=').next())
    });
    vars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debian_box_trusts_the_installed_ca_alongside_its_roots_until_it_restarts() {
    let h = TestHome::new();
    let (rt, b) = boot(&h, "boxlite/python").await;
    let image_bundle = out(&b, cat(DEBIAN_BUNDLE)).await;
    let env_before = out(&b, BoxCommand::new("env")).await;

    let covered = b.install_ca(TEST_CA).await.unwrap();
    let again = b.install_ca(TEST_CA).await.unwrap();
    let bundle = out(&b, cat(DEBIAN_BUNDLE)).await;
    let fixed_bundle = out(&b, cat(BUNDLE)).await;
    let ca = out(&b, cat(CA)).await;
    let env = out(&b, BoxCommand::new("env")).await;
    let own = out(
        &b,
        sh("echo $SSL_CERT_FILE $CURL_CA_BUNDLE").env("SSL_CERT_FILE", "/mine.pem"),
    )
    .await;
    let python = out(&b, BoxCommand::new("python3").args(["-c", PYTHON_VIEW])).await;
    b.stop(Duration::from_secs(10)).await.unwrap();
    b.start().await.unwrap();
    let bundle_after_restart = out(&b, cat(DEBIAN_BUNDLE)).await;
    let env_after_restart = out(&b, BoxCommand::new("env")).await;

    assert!(image_bundle.matches("-----BEGIN CERTIFICATE-----").count() > 100);
    assert_eq!(ca_vars(&env_before), Vec::<&str>::new());
    assert_eq!(covered, [DEBIAN_BUNDLE, BUNDLE]);
    assert_eq!(again, covered);
    // The image's roots, then the CA, once (the second install replaced it).
    assert_eq!(bundle, format!("{image_bundle}{TEST_CA}"));
    assert_eq!(fixed_bundle, bundle);
    assert_eq!(ca, TEST_CA);
    assert_eq!(ca_vars(&env), CA_ENV);
    assert_eq!(own, "/mine.pem /etc/boxlite/ca-bundle.crt\n");
    assert_eq!(python, "/etc/boxlite/ca-bundle.crt\nTrue True\n");
    assert_eq!(bundle_after_restart, image_bundle);
    assert_eq!(ca_vars(&env_after_restart), Vec::<&str>::new());
    teardown(rt, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_without_a_bundle_gets_the_ca_alone_and_a_bad_pem_is_an_invalid_argument() {
    let h = TestHome::new();
    let (rt, b) = boot(&h, "boxlite/busybox").await;

    let bad = b.install_ca("-----BEGIN CERTIFICATE-----\n!!\n").await;
    let env_after_bad = out(&b, BoxCommand::new("env")).await;
    let covered = b.install_ca(TEST_CA).await.unwrap();
    let bundle = out(&b, cat(BUNDLE)).await;
    let ca = out(&b, cat(CA)).await;
    let env = out(&b, BoxCommand::new("env")).await;
    let ssl_dir = out(&b, sh("test -e /etc/ssl && echo present || echo absent")).await;

    assert!(
        matches!(
            &bad,
            Err(Error::Portal(e @ PortalError::Rpc { .. }))
                if e.code() == Some(tonic::Code::InvalidArgument)
        ),
        "{bad:?}"
    );
    assert_eq!(ca_vars(&env_after_bad), Vec::<&str>::new());
    assert_eq!(covered, [BUNDLE]);
    assert_eq!(bundle, TEST_CA);
    assert_eq!(ca, TEST_CA);
    assert_eq!(ca_vars(&env), CA_ENV);
    assert_eq!(ssl_dir, "absent\n");
    teardown(rt, b).await;
}

/// An HTTPS server on 127.0.0.1:8443 inside the box, with [`SERVER_CERT`] (from the
/// environment); it touches /tmp/ready once it listens and answers every GET with "ok".
const SERVER: &str = "import http.server, os, ssl
open('/tmp/server.pem', 'w').write(os.environ['CERT'] + os.environ['KEY'])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain('/tmp/server.pem')
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Length', '3')
        self.end_headers()
        self.wfile.write(b'ok\\n')
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(('127.0.0.1', 8443), Ok)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
open('/tmp/ready', 'w').close()
server.serve_forever()";

/// The exit status and stdout of a command, whatever the status.
async fn status_and_out(b: &LiteBox, cmd: BoxCommand) -> (ExitStatus, String) {
    let mut ex = b.exec(cmd).await.unwrap();
    let mut stdout = ex.take_stdout().unwrap();
    let mut stderr = ex.take_stderr().unwrap();
    let (o, _) = tokio::join!(stdout.read_to_end(), stderr.read_to_end());
    (
        ex.wait().await.unwrap(),
        String::from_utf8(o.unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_requests_and_node_fetch_trust_a_server_of_the_installed_ca_without_flags() {
    let reg = Registry::start();
    TestImage::built(
        "clients",
        serde_json::json!({
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            "Cmd": ["python3"]
        }),
    )
    .push(&reg, "test/clients", "v1");
    let h = TestHome::new();
    h.allow_http(&reg);
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new(format!("{}/test/clients:v1", reg.addr)))
        .await
        .unwrap();
    b.start().await.unwrap();
    let _server = b
        .exec(
            BoxCommand::new("python3")
                .args(["-c", SERVER])
                .env("CERT", SERVER_CERT)
                .env("KEY", SERVER_KEY),
        )
        .await
        .unwrap();
    out(
        &b,
        sh("for i in $(seq 300); do [ -e /tmp/ready ] && exit 0; sleep 0.1; done; exit 1"),
    )
    .await;
    let url = "https://localhost:8443/";
    let curl = || BoxCommand::new("curl").args(["-sS", url]);

    let (untrusted, _) = status_and_out(&b, curl()).await;
    b.install_ca(TEST_CA).await.unwrap();
    let by_curl = out(&b, curl()).await;
    let by_curl_ip = out(
        &b,
        BoxCommand::new("curl").args(["-sS", "https://127.0.0.1:8443/"]),
    )
    .await;
    let by_requests = out(
        &b,
        BoxCommand::new("python3").args([
            "-c",
            &format!("import requests; print(requests.get({url:?}).text, end='')"),
        ]),
    )
    .await;
    let by_fetch = out(
        &b,
        BoxCommand::new("node").args([
            "-e",
            // Node's fetch tries only the first address of a name, and localhost is
            // ::1 first, where the server does not listen.
            "fetch('https://127.0.0.1:8443/').then(r => r.text()).then(t => process.stdout.write(t))",
        ]),
    )
    .await;

    // curl's "peer certificate cannot be authenticated with known CA certificates".
    assert_eq!(untrusted, ExitStatus::Code(60));
    assert_eq!(by_curl, "ok\n");
    assert_eq!(by_curl_ip, "ok\n");
    assert_eq!(by_requests, "ok\n");
    assert_eq!(by_fetch, "ok\n");
    teardown(rt, b).await;
}
