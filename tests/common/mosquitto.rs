//! A real Mosquitto broker (`/usr/sbin/mosquitto`, Debian package `mosquitto`) on a free loopback port in a temp
//! dir, killed on drop and restartable on the same port; plus a rumqttc subscriber that records every message it
//! receives.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, Event, Incoming, MqttOptions, Outgoing, QoS};

use super::{free_tcp_port, wait_for};

/// How the broker is set up.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// `Some((user, password))`: no anonymous access, a password file made with `mosquitto_passwd -b`.
    pub credentials: Option<(String, String)>,
    /// Keep sessions, subscriptions and queued QoS 1/2 messages across [`Mosquitto::restart`] (saved on SIGTERM).
    pub persistence: bool,
    /// Also listen with TLS on [`Mosquitto::tls_port`], with these files.
    pub tls: Option<TlsFiles>,
    /// Log every packet (`log_type debug`: PINGREQ, PUBLISH, ...) to [`Mosquitto::log`].
    pub debug_log: bool,
}

/// A test CA and a server certificate for 127.0.0.1 / localhost it signed.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
}

/// A running mosquitto.
pub struct Mosquitto {
    child: Option<Child>,
    /// Plain MQTT port on 127.0.0.1.
    pub port: u16,
    /// TLS port on 127.0.0.1 (when started with [`BrokerOptions::tls`]).
    pub tls_port: Option<u16>,
    conf: PathBuf,
    dir: tempfile::TempDir,
}

/// The broker binary.
pub fn mosquitto_bin() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

/// `mosquitto_passwd`, when installed (it comes with the `mosquitto` package).
pub fn mosquitto_passwd() -> Option<PathBuf> {
    ["/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// True when the `openssl` command is available (to make test certificates).
pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes a CA and a server certificate for `127.0.0.1`/`localhost` in `dir` with the `openssl` command (EC P-256,
/// valid two days).
pub fn make_tls_files(dir: &Path) -> TlsFiles {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca_args = vec!["req", "-x509"];
    ca_args.extend(ec);
    ca_args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sense-ingest test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca_args);
    let mut csr_args = vec!["req"];
    csr_args.extend(ec);
    csr_args.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    run(&csr_args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// True when this process runs as root (mosquitto then switches to its `user`, which must be able to read our
/// temp dir: we keep root).
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Mosquitto {
    /// Anonymous access, no persistence.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(BrokerOptions::default())
    }

    /// Starts mosquitto with a generated config and waits until it accepts TCP connections.
    pub fn start_with(options: BrokerOptions) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_tcp_port();
        let d = dir.path().display();
        let mut conf = String::new();
        if running_as_root() {
            conf.push_str("user root\n");
        }
        conf.push_str(&format!(
            "log_dest file {d}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n\
             log_type information\nconnection_messages true\nmax_queued_messages 0\n"
        ));
        if options.debug_log {
            conf.push_str("log_type debug\n");
        }
        if options.persistence {
            conf.push_str(&format!(
                "persistence true\npersistence_location {d}/\nautosave_interval 0\n"
            ));
        } else {
            conf.push_str("persistence false\n");
        }
        match &options.credentials {
            Some((user, password)) => {
                let passwd = mosquitto_passwd().expect("mosquitto_passwd (check mosquitto_passwd() first)");
                let file = dir.path().join("passwords");
                let ok = Command::new(passwd)
                    .arg("-c")
                    .arg("-b")
                    .arg(&file)
                    .arg(user)
                    .arg(password)
                    .status()
                    .expect("run mosquitto_passwd");
                assert!(ok.success(), "mosquitto_passwd failed");
                conf.push_str(&format!("allow_anonymous false\npassword_file {}\n", file.display()));
            }
            None => conf.push_str("allow_anonymous true\n"),
        }
        conf.push_str(&format!("listener {port} 127.0.0.1\n"));
        let tls_port = options.tls.as_ref().map(|tls| {
            let tls_port = free_tcp_port();
            conf.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            ));
            tls_port
        });
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut me = Mosquitto {
            child: None,
            port,
            tls_port,
            conf: conf_path,
            dir,
        };
        me.spawn();
        me
    }

    fn spawn(&mut self) {
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto (install the Debian package `mosquitto`)");
        self.child = Some(child);
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        wait_for("mosquitto to accept connections", Duration::from_secs(15), || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut e) = self.child.as_mut().unwrap().stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                }
                panic!("mosquitto exited early: {status}\n{stderr}\n{}", self.log());
            }
            ports
                .iter()
                .all(|p| {
                    let addr = SocketAddr::from(([127, 0, 0, 1], *p));
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                })
                .then_some(())
        });
    }

    /// Stops the broker gracefully (SIGTERM: with persistence, sessions and queued messages are saved) and waits
    /// for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let exited = wait_for("mosquitto to exit after SIGTERM", Duration::from_secs(10), || {
            child.try_wait().ok().flatten()
        });
        let _ = exited;
    }

    /// Starts a stopped broker again on the same port(s), with the same config (and, with persistence, the saved
    /// sessions).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "mosquitto is still running");
        self.spawn();
    }

    /// Stops the broker and starts it again on the same port(s).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// The broker's temp dir (config, log, password file, persistence).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One message as a subscriber received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Topic.
    pub topic: String,
    /// Payload bytes, exactly.
    pub payload: Vec<u8>,
    /// QoS of the delivery (the lower of the publish's and the subscription's).
    pub qos: u8,
    /// Retain flag of the delivery: true only for a retained message sent on subscribe.
    pub retain: bool,
}

/// How a [`Subscriber`] connects.
#[derive(Debug, Clone)]
pub struct SubscriberOptions {
    /// Topic filter (default `#`).
    pub filter: String,
    /// Subscription QoS (default 1).
    pub qos: u8,
    /// Client id (default: a unique one).
    pub client_id: Option<String>,
    /// Clean session (default true). False keeps the subscription and queued messages at the broker while we are
    /// away (needs a fixed `client_id`).
    pub clean_session: bool,
    /// User name and password.
    pub credentials: Option<(String, String)>,
}

impl Default for SubscriberOptions {
    fn default() -> Self {
        SubscriberOptions {
            filter: "#".into(),
            qos: 1,
            client_id: None,
            clean_session: true,
            credentials: None,
        }
    }
}

/// A subscriber on its own thread, recording every message into a shared list (in arrival order). Reconnects
/// (50 ms apart) when the broker goes away and subscribes again when the broker has no session for it.
pub struct Subscriber {
    /// Everything received so far.
    pub messages: Arc<Mutex<Vec<Received>>>,
    client: Client,
    stop: Arc<AtomicBool>,
}

fn to_qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Subscriber {
    /// Subscribes to `#` with QoS 1 on `127.0.0.1:port`.
    pub fn connect(port: u16) -> Subscriber {
        Subscriber::connect_with(port, SubscriberOptions::default())
    }

    /// Connects, subscribes and returns once the broker acknowledged the subscription.
    pub fn connect_with(port: u16, options: SubscriberOptions) -> Subscriber {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let list = Arc::clone(&messages);
        let mut sub = Subscriber::connect_with_handler(port, options, move |m| list.lock().unwrap().push(m));
        sub.messages = messages;
        sub
    }

    /// Like [`Subscriber::connect_with`], but hands every message to `on_message` (on the subscriber's thread)
    /// instead of keeping it: for streams too long to hold ([`Subscriber::received`] stays empty).
    pub fn connect_with_handler(
        port: u16,
        options: SubscriberOptions,
        mut on_message: impl FnMut(Received) + Send + 'static,
    ) -> Subscriber {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = options.client_id.clone().unwrap_or_else(|| {
            format!(
                "test-sub-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        });
        let mut mqtt = MqttOptions::new(id, "127.0.0.1", port);
        mqtt.set_clean_session(options.clean_session);
        mqtt.set_keep_alive(Duration::from_secs(30));
        mqtt.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = &options.credentials {
            mqtt.set_credentials(user.clone(), password.clone());
        }
        let (client, mut connection) = Client::new(mqtt, 100);
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(Mutex::new(None::<String>));
        {
            let (stop, subscribed, refused) = (Arc::clone(&stop), Arc::clone(&subscribed), Arc::clone(&refused));
            let client = client.clone();
            let (filter, qos) = (options.filter.clone(), to_qos(options.qos));
            std::thread::spawn(move || {
                for event in connection.iter() {
                    match event {
                        Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                            if !ack.session_present {
                                let _ = client.try_subscribe(filter.clone(), qos);
                            } else {
                                subscribed.store(true, Ordering::Relaxed);
                            }
                        }
                        Ok(Event::Incoming(Incoming::SubAck(_))) => subscribed.store(true, Ordering::Relaxed),
                        Ok(Event::Incoming(Incoming::Publish(p))) => {
                            on_message(Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                qos: p.qos as u8,
                                retain: p.retain,
                            });
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(e) => {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            *refused.lock().unwrap() = Some(e.to_string());
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !subscribed.load(Ordering::Relaxed) {
            assert!(
                std::time::Instant::now() < deadline,
                "the test subscriber got no SUBACK within 15 s; last error: {:?}",
                refused.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Subscriber {
            messages: Arc::new(Mutex::new(Vec::new())),
            client,
            stop,
        }
    }

    /// A copy of everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// Number of messages received so far.
    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    /// Waits until at least `n` messages arrived and returns them all.
    pub fn wait_for_count(&self, n: usize, timeout: Duration) -> Vec<Received> {
        wait_for(&format!("{n} MQTT messages at the test subscriber"), timeout, || {
            let m = self.messages.lock().unwrap();
            (m.len() >= n).then(|| m.clone())
        })
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
    }
}
