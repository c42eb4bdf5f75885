//! Arbitrary UTF-8 text into `sense_ingest::config::load_str`, which must never panic: it returns the config or
//! every error with its key path.
//!
//! Two things `load_str` does reach outside the process, and the target steers around them (see README.md):
//! - `userEvents.udpServerConfig.serverHost` and `allowedSources` are resolved with the system resolver when they
//!   are hostnames. Inputs that would send a DNS query (a hostname-like value other than `localhost`) are skipped,
//!   so fuzzing never floods a name server.
//! - `mqttConfig.tls.caFile` is read when TLS is on. Inputs naming an existing file that is neither a regular file
//!   nor a folder (`/dev/zero`, `/dev/stdin`, a FIFO) are skipped: reading one never ends (README, known issues).
//!
//! The guard is `sense_ingest::testing::stays_local`, the same one the config property tests use.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sense_ingest::testing::stays_local;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if !stays_local(text) {
        return;
    }
    match sense_ingest::config::load_str(text) {
        Ok(loaded) => {
            // Debug of a valid config must work too (it is what a developer prints).
            let _ = format!("{:?}", loaded.config);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error result without errors");
            for error in errors.iter() {
                assert!(
                    !error.message.is_empty(),
                    "an error without a message at {:?}",
                    error.path
                );
            }
        }
    }
});
