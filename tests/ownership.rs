//! Issues 5 and 6: one owner per port and per spool. A second engine on the same UDP port or the same spool
//! folder refuses to start and names the first; New Relic accounts whose names look alike keep separate spools.

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::nr_receiver::{Fault, NrReceiver};
use crate::common::{free_tcp_port, run_until_exit, send_datagrams, wait_for, Engine};

/// A UDP port that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The fixture config writing to an InfluxDB that is down (so events wait in the spool), listening on
/// 127.0.0.1:`port`, spooling in `spool`.
fn config(port: u16, spool: Option<&Path>) -> String {
    let mut cfg = fixtures::influx_only_config(false, free_tcp_port(), "ownership");
    set(
        &mut cfg,
        "sense-ingest.listen",
        Yaml::Sequence(vec![Yaml::from(format!("127.0.0.1:{port}"))]),
    );
    match spool {
        Some(dir) => set(&mut cfg, "sense-ingest.spool.dir", Yaml::from(dir.to_str().unwrap())),
        None => set(&mut cfg, "sense-ingest.spool.enable", Yaml::from(false)),
    }
    serde_norway::to_string(&cfg).unwrap()
}

/// Starts a second engine with `yaml` and checks that it exits non-zero naming `first`'s pid, and that `first`
/// still receives.
fn second_instance_is_refused(first: &mut Engine, yaml: &str, what: &str) {
    let (status, stderr) = run_until_exit(yaml, Duration::from_secs(20));
    assert!(!status.success(), "the second instance must fail; stderr:\n{stderr}");
    let pid = first.pid().to_string();
    assert!(
        stderr.contains(what) && stderr.contains(&format!("pid {pid}")),
        "the refusal must name the {what} and the first engine (pid {pid}):\n{stderr}"
    );
    assert!(
        !stderr.contains("listening"),
        "the second instance bound a socket:\n{stderr}"
    );
    let first_event = fixtures::cases().into_iter().next().unwrap();
    send_datagrams(first.target(), &vec![first_event.datagram; 10]);
    first.terminate();
    let log = first.stderr_text();
    assert!(
        log.contains("received=10 "),
        "the first engine must get every datagram:\n{log}"
    );
}

/// Issue 6: a second `run` with the same config (same port, same spool) exits non-zero naming the first.
#[test]
fn issue_6_a_second_instance_with_the_same_config_exits_naming_the_first() {
    let spool = tempfile::tempdir().unwrap();
    let yaml = config(free_udp_port(), Some(spool.path()));
    let mut first = Engine::start_with_yaml(&yaml);
    second_instance_is_refused(&mut first, &yaml, "udp port");
}

/// Issue 6: without a spool, a second engine on the same port would split the traffic (`SO_REUSEPORT`): refused.
#[test]
fn issue_6_a_second_instance_on_the_same_port_without_a_spool_exits_naming_the_first() {
    let yaml = config(free_udp_port(), None);
    let mut first = Engine::start_with_yaml(&yaml);
    second_instance_is_refused(&mut first, &yaml, "udp port");
}

/// Issue 6: two engines on different ports but one spool folder would corrupt it: the second is refused.
#[test]
fn issue_6_a_second_instance_sharing_only_the_spool_exits_naming_the_first() {
    let spool = tempfile::tempdir().unwrap();
    let mut first = Engine::start_with_yaml(&config(free_udp_port(), Some(spool.path())));
    second_instance_is_refused(&mut first, &config(free_udp_port(), Some(spool.path())), "spool folder");
}

const ID_SPACE: &str = "1111111";
const ID_UNDERSCORE: &str = "2222222";
const KEY_SPACE: &str = "NRII-fake-key-SPACE";
const KEY_UNDERSCORE: &str = "NRII-fake-key-UNDERSCORE";

/// New Relic only, two accounts named `prod eu` and `prod_eu`, spooling in `spool`.
fn look_alike_accounts_config(rx: &NrReceiver, spool: &Path) -> String {
    let mut cfg = fixtures::new_relic_only_config(false, &rx.url());
    let accounts: Yaml = serde_norway::from_str(&format!(
        "- {{accountName: prod eu, insertApiKey: {KEY_SPACE}, accountId: '{ID_SPACE}'}}\n\
         - {{accountName: prod_eu, insertApiKey: {KEY_UNDERSCORE}, accountId: '{ID_UNDERSCORE}'}}\n"
    ))
    .unwrap();
    set(&mut cfg, "Butler-SOS.thirdPartyToolsCredentials.newRelic", accounts);
    set(
        &mut cfg,
        "Butler-SOS.userEvents.sendToNewRelic.destinationAccount",
        Yaml::Sequence(vec![Yaml::from("prod eu"), Yaml::from("prod_eu")]),
    );
    set(&mut cfg, "sense-ingest.spool.dir", Yaml::from(spool.to_str().unwrap()));
    set(&mut cfg, "sense-ingest.shutdownTimeout", Yaml::from("500ms"));
    set(&mut cfg, "sense-ingest.retry.initialBackoff", Yaml::from("50ms"));
    set(&mut cfg, "sense-ingest.retry.maxBackoff", Yaml::from("200ms"));
    set(&mut cfg, "sense-ingest.batch.maxAge", Yaml::from("50ms"));
    serde_norway::to_string(&cfg).unwrap()
}

/// Issue 5: accounts `prod eu` and `prod_eu` once shared a spool folder, so after a restart each replayed the
/// other's events with its own key. Now `prod_eu` is down for the first run, its events are spooled, and after
/// the restart exactly those reach `prod_eu`; `prod eu` receives nothing twice.
#[test]
fn issue_5_accounts_whose_names_sanitise_alike_keep_their_own_spools() {
    let rx = NrReceiver::start(&[(ID_SPACE, KEY_SPACE), (ID_UNDERSCORE, KEY_UNDERSCORE)]);
    let spool = tempfile::tempdir().unwrap();
    let yaml = look_alike_accounts_config(&rx, spool.path());
    let event = fixtures::cases().into_iter().next().unwrap().datagram;
    const N: usize = 40;

    rx.fail_always(ID_UNDERSCORE, Fault::status(503));
    let mut first = Engine::start_with_yaml(&yaml);
    send_datagrams(first.target(), &vec![event; N]);
    wait_for("every event at `prod eu`", Duration::from_secs(20), || {
        (rx.event_count(ID_SPACE) == N).then_some(())
    });
    assert!(first.terminate().success(), "{}", first.stderr_text());
    assert_eq!(rx.event_count(ID_UNDERSCORE), 0);

    rx.heal(ID_UNDERSCORE);
    let mut second = Engine::start_with_yaml(&yaml);
    wait_for("the spooled events replayed", Duration::from_secs(30), || {
        (rx.event_count(ID_SPACE) + rx.event_count(ID_UNDERSCORE) >= 2 * N).then_some(())
    });
    assert!(second.terminate().success(), "{}", second.stderr_text());
    assert_eq!(
        rx.event_count(ID_SPACE),
        N,
        "`prod eu` must not replay `prod_eu`'s spool"
    );
    assert_eq!(
        rx.event_count(ID_UNDERSCORE),
        N,
        "`prod_eu` must get exactly its spooled events"
    );
    for (id, key) in [(ID_SPACE, KEY_SPACE), (ID_UNDERSCORE, KEY_UNDERSCORE)] {
        for a in rx.accepted(id) {
            assert_eq!(
                a.header("Api-Key"),
                Some(key),
                "account {id} got a request with another key"
            );
        }
    }
}

/// A spool folder that cannot be created (here: below a file) does not stop the engine: as before the spool lock,
/// it runs with memory queues only (docs/deployment.md) and says so once.
#[test]
fn an_unusable_spool_folder_leaves_memory_queues_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "").unwrap();
    let mut engine = Engine::start_with_yaml(&config(free_udp_port(), Some(&file.join("spool"))));
    let log = engine.stderr_text();
    assert_eq!(
        log.matches("cannot lock the spool folder; running with memory queues only")
            .count(),
        1,
        "{log}"
    );
    engine.terminate();
}
