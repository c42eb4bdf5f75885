//! Issue 5: one owner per spool folder. New Relic accounts whose names look alike keep separate spools.

use std::path::Path;
use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::nr_receiver::{Fault, NrReceiver};
use crate::common::{send_datagrams, wait_for, Engine};

const ID_SPACE: &str = "1111111";
const ID_UNDERSCORE: &str = "2222222";
const KEY_SPACE: &str = "NRII-fake-key-SPACE";
const KEY_UNDERSCORE: &str = "NRII-fake-key-UNDERSCORE";

/// New Relic only, two accounts named `prod eu` and `prod_eu`, spooling in `spool`.
fn look_alike_accounts_config(rx: &NrReceiver, spool: &Path) -> String {
    let mut cfg = fixtures::loopback_config(false);
    set(&mut cfg, "Butler-SOS.influxdbConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.mqttConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.newRelic.enable", Yaml::from(true));
    set(&mut cfg, "Butler-SOS.newRelic.event.url", Yaml::from(rx.url()));
    set(&mut cfg, "Butler-SOS.logLevel", Yaml::from("info"));
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
