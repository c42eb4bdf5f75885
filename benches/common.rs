//! Bench inputs: realistic datagrams in the shapes Qlik Sense sends.

#![allow(dead_code)]

pub const TYPICAL: &[u8] = b"/qseow-proxy-connection/;sense1.lab.example;Open connection;LAB;goran;AppAccess;/app/a421f4a2-c311-4ef4-ba41-fe2e6a2b0d69?reloaduri=https%3a%2f%2fsense1.lab.example%2fsense%2fapp%2fa421f4a2-c311-4ef4-ba41-fe2e6a2b0d69;AppAccess connection Opened for session '8c1d6a57-3e1b-4f0b-9a0e-7c3f1d2b4e65'. UserAgent: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'";

pub const SESSION: &[u8] =
    b"/qseow-proxy-session/;sense1.lab.example;Start session;LAB;goran;Hub;/hub/;Start session for user 'LAB\\goran'";

pub const MALFORMED: &[u8] = b"/qseow-proxy-foo/;sense1.lab.example;Start session;LAB;goran;Hub;/hub/;whatever";

/// A message of ~900 chars followed by a long user agent.
pub fn long_ua() -> Vec<u8> {
    let mut d = b"/qseow-proxy-connection/;sense1.lab.example;Open connection;LAB;goran;AppAccess;/app/a421f4a2-c311-4ef4-ba41-fe2e6a2b0d69;".to_vec();
    d.extend(std::iter::repeat_n(b'x', 600));
    d.extend_from_slice(b" UserAgent: 'Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 SamsungBrowser/24.0 [FBAN/EMA;FBLC/en_US;FBAV/400.0.0.11.113;]'");
    d
}

/// 1000 distinct datagrams (users, commands, apps) in Qlik's shapes.
pub fn mixed(n: usize) -> Vec<Vec<u8>> {
    let commands = [
        ("session", "Start session"),
        ("connection", "Open connection"),
        ("connection", "Close connection"),
        ("session", "Stop session"),
    ];
    (0..n)
        .map(|i| {
            let (kind, cmd) = commands[i % 4];
            format!(
                "/qseow-proxy-{kind}/;sense{}.lab.example;{cmd};LAB;user{:04};AppAccess;/app/a421f4a2-c311-4ef4-ba41-fe2e6a2b{:04x}?reloaduri=x;connection for session 'x'. UserAgent: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'",
                i % 4,
                i % 500,
                i % 4096
            )
            .into_bytes()
        })
        .collect()
}
