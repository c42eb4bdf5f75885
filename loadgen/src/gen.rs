//! The traffic model: *what* each datagram says and *when* it is due.
//!
//! Everything here is a pure function of `(seed, seq)`: datagram number `seq` always has the
//! same host, user, command, app and user agent for a given seed and model size, whatever was
//! generated before it. That is what lets the mock sinks and the loss report recompute the
//! sending host of a missing sequence number instead of storing it, and lets `--record` write
//! exactly what a live run would send.
//!
//! # Datagram shape
//! The 8 `;`-separated Log4Net fields of the Qlik Sense proxy user-event appender
//! (reference/PROTOCOLS.md §a.2):
//!
//! ```text
//! /qseow-proxy-session/;<host>;Start session;<DIR>;<user>;<origin>;<context>;<message>
//! /qseow-proxy-connection/;<host>;Open connection;<DIR>;<user>;<origin>;<context>;<message>
//! ```
//!
//! The message (field 7, free text) always starts with `seq=<n> run=<run id> `, so any
//! receiver that sees the message (MQTT, a raw capture) can identify the datagram. Sinks that
//! only see tags and fields (InfluxDB, New Relic) get the sequence number through the user id
//! instead when [`SeqIn::User`] is chosen: the user id is then `s<seq>`.

use std::time::Duration;

use serde::Serialize;

/// The four proxy commands, as Qlik Sense writes them (case-sensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// `Start session` (message type `/qseow-proxy-session/`).
    StartSession,
    /// `Stop session` (message type `/qseow-proxy-session/`).
    StopSession,
    /// `Open connection` (message type `/qseow-proxy-connection/`).
    OpenConnection,
    /// `Close connection` (message type `/qseow-proxy-connection/`).
    CloseConnection,
}

impl Command {
    /// All commands, in declaration order (the order of a command mix).
    pub const ALL: [Command; 4] = [
        Command::StartSession,
        Command::StopSession,
        Command::OpenConnection,
        Command::CloseConnection,
    ];

    /// The command field exactly as the proxy writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::StartSession => "Start session",
            Command::StopSession => "Stop session",
            Command::OpenConnection => "Open connection",
            Command::CloseConnection => "Close connection",
        }
    }

    /// Field 0 for this command.
    pub fn message_type(self) -> &'static str {
        match self {
            Command::StartSession | Command::StopSession => "/qseow-proxy-session/",
            Command::OpenConnection | Command::CloseConnection => "/qseow-proxy-connection/",
        }
    }
}

/// The shape of the send rate over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// A constant rate for the whole run.
    Steady,
    /// A "9 am login storm": the first 20% of the run at 5 times the rate of the rest, mostly
    /// `Start session` + `Open connection`; the total stays `rate x duration`.
    Storm,
}

/// Where the sequence number goes besides the message prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeqIn {
    /// Only in the message (`seq=<n> run=<id> ...`); user ids stay realistic (`user0042`).
    Message,
    /// Also as the user id: `s<seq>`. Every datagram then has a unique user id, which is what
    /// the InfluxDB/New Relic mock sinks need to identify events, but it multiplies series
    /// cardinality in a real InfluxDB (one series per datagram).
    User,
}

impl Pattern {
    /// The name as given on the command line (`--pattern steady`).
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Steady => "steady",
            Pattern::Storm => "storm",
        }
    }
}

/// Share of the run that the storm burst lasts (20 %).
pub const STORM_FRACTION: (u64, u64) = (1, 5);
/// Burst rate relative to the rate after the burst.
pub const STORM_FACTOR: u64 = 5;

/// A fixed send schedule: datagram `seq` is due at [`Schedule::intended_ns`]`(seq)` after the
/// run's start, whatever happened to the datagrams before it.
///
/// Latency is measured from this *intended* time, not from when the datagram actually left:
/// if the sender (or the machine) stalls, the datagrams that should have gone out during the
/// stall are charged for it. This avoids coordinated omission, where a stalled load generator
/// quietly stops producing the very samples that would show the stall.
#[derive(Clone, Debug)]
pub struct Schedule {
    segments: Vec<Segment>,
    total: u64,
}

/// A stretch of the schedule with a constant rate.
#[derive(Clone, Copy, Debug)]
struct Segment {
    first_seq: u64,
    count: u64,
    start_ns: u64,
    dur_ns: u64,
    /// Whether this is a login burst (changes the command mix).
    login_burst: bool,
}

impl Schedule {
    /// A schedule for `rate` datagrams/s over `duration`; the total is
    /// `floor(rate x duration)`.
    ///
    /// Errors (as a message naming the arguments) when that total is zero.
    pub fn new(pattern: Pattern, rate: u64, duration: Duration) -> Result<Schedule, String> {
        let duration_ns = u64::try_from(duration.as_nanos()).map_err(|_| "--duration is too long".to_string())?;
        let total = u64::try_from(u128::from(rate) * u128::from(duration_ns) / 1_000_000_000)
            .map_err(|_| "--rate x --duration is too large".to_string())?;
        if total == 0 {
            return Err(format!(
                "--rate {rate} x --duration {duration:?} gives 0 datagrams; raise either"
            ));
        }
        let segments = match pattern {
            Pattern::Steady => vec![Segment {
                first_seq: 0,
                count: total,
                start_ns: 0,
                dur_ns: duration_ns,
                login_burst: false,
            }],
            Pattern::Storm => {
                let burst_ns = duration_ns * STORM_FRACTION.0 / STORM_FRACTION.1;
                let rest_ns = duration_ns - burst_ns;
                // burst_count / burst_ns = FACTOR * rest_count / rest_ns, burst + rest = total.
                let w_burst = u128::from(STORM_FACTOR) * u128::from(burst_ns);
                let w_rest = u128::from(rest_ns);
                let burst_count = u64::try_from(u128::from(total) * w_burst / (w_burst + w_rest)).unwrap_or(0);
                let rest_count = total - burst_count;
                let mut segs = Vec::with_capacity(2);
                if burst_count > 0 {
                    segs.push(Segment {
                        first_seq: 0,
                        count: burst_count,
                        start_ns: 0,
                        dur_ns: burst_ns,
                        login_burst: true,
                    });
                }
                if rest_count > 0 {
                    segs.push(Segment {
                        first_seq: burst_count,
                        count: rest_count,
                        start_ns: burst_ns,
                        dur_ns: rest_ns,
                        login_burst: false,
                    });
                }
                segs
            }
        };
        Ok(Schedule { segments, total })
    }

    /// Number of datagrams in the run.
    pub fn total(&self) -> u64 {
        self.total
    }

    fn segment(&self, seq: u64) -> &Segment {
        self.segments
            .iter()
            .find(|s| seq < s.first_seq + s.count)
            .unwrap_or_else(|| self.segments.last().expect("a schedule has a segment"))
    }

    /// Intended send time of `seq`, in nanoseconds after the run's start. Monotonic
    /// non-decreasing in `seq`; `intended_ns(0) == 0`.
    pub fn intended_ns(&self, seq: u64) -> u64 {
        let s = self.segment(seq);
        let j = u128::from(seq.saturating_sub(s.first_seq));
        s.start_ns + u64::try_from(j * u128::from(s.dur_ns) / u128::from(s.count)).unwrap_or(0)
    }

    /// Whether `seq` falls in a login burst.
    pub fn is_login_burst(&self, seq: u64) -> bool {
        self.segment(seq).login_burst
    }
}

/// A tiny, fast, deterministic PRNG (SplitMix64, Steele/Lea/Flood 2014). Good enough for
/// traffic shaping; not for anything secret.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`), by multiply-high (Lemire); the bias is < n / 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Real browser user agents with rough market weights (Chrome on Windows dominates corporate
/// Qlik Sense estates).
const USER_AGENTS: &[(u32, &str)] = &[
    (40, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
    (20, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"),
    (8, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    (3, "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    (8, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"),
    (6, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
    (6, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1"),
    (4, "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"),
    (5, "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36"),
];

/// Command mix in per-mille: `[Start session, Stop session, Open connection, Close connection]`.
/// Steady state: connections (one per app or hub page opened) far outnumber sessions.
const MIX_STEADY: [u64; 4] = [100, 100, 420, 380];
/// During a login burst: mostly logins and first app opens.
const MIX_LOGIN_BURST: [u64; 4] = [450, 30, 470, 50];

/// Qlik sheet ids look like `PjKhv`.
const SHEET_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Sizes and identity of a generated run.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// Simulated proxy hosts (each sends from its own socket).
    pub hosts: u32,
    /// Distinct users.
    pub users: u32,
    /// Distinct apps.
    pub apps: u32,
    /// PRNG seed: same seed and sizes, same datagrams.
    pub seed: u64,
    /// Sequence number of datagram 0: datagram `i` carries `seq_base + i`. Give successive
    /// runs disjoint ranges so a sink can tell an old run's late events from this run's.
    pub seq_base: u64,
    /// Where the sequence number goes.
    pub seq_in: SeqIn,
    /// Identifies this run in every message (`run=<id>`).
    pub run_id: String,
}

/// What [`TrafficModel::write`] produced, besides the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generated {
    /// Index of the sending host in `0..hosts`.
    pub host: usize,
    /// The command in field 2.
    pub command: Command,
}

/// Deterministic generator of Qlik-shaped datagrams.
#[derive(Clone, Debug)]
pub struct TrafficModel {
    cfg: ModelConfig,
    host_names: Vec<String>,
    /// Cumulative host weights (hosts are mildly skewed: weight 1/sqrt(i+1)).
    host_cum: Vec<u64>,
    app_ids: Vec<String>,
    ua_cum: Vec<u32>,
    user_digits: usize,
    schedule: Schedule,
}

impl TrafficModel {
    /// Builds the model. `hosts`, `users` and `apps` must be >= 1 (checked by the CLI).
    pub fn new(cfg: ModelConfig, schedule: Schedule) -> TrafficModel {
        let hosts = cfg.hosts.max(1);
        let host_names = (0..hosts)
            .map(|i| format!("qlikproxy{:02}.corp.example", i + 1))
            .collect();
        let mut acc = 0u64;
        let host_cum = (0..hosts)
            .map(|i| {
                acc += (1_000_000.0 / f64::from(i + 1).sqrt()) as u64;
                acc
            })
            .collect();
        let app_ids = (0..cfg.apps.max(1))
            .map(|i| {
                let mut rng = SplitMix64::new(cfg.seed ^ 0xA11_A11A ^ (u64::from(i) << 20));
                uuid_v4(&mut rng)
            })
            .collect();
        let mut acc = 0u32;
        let ua_cum = USER_AGENTS
            .iter()
            .map(|(w, _)| {
                acc += w;
                acc
            })
            .collect();
        let user_digits = cfg.users.max(1).to_string().len().max(4);
        TrafficModel {
            cfg,
            host_names,
            host_cum,
            app_ids,
            ua_cum,
            user_digits,
            schedule,
        }
    }

    /// Host names, indexed like [`Generated::host`].
    pub fn host_names(&self) -> &[String] {
        &self.host_names
    }

    /// The app ids (valid v4 UUIDs) used in `/app/<id>` contexts.
    #[cfg(test)]
    pub fn app_ids(&self) -> &[String] {
        &self.app_ids
    }

    fn rng_for(&self, seq: u64) -> SplitMix64 {
        SplitMix64::new(self.cfg.seed ^ seq.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    fn pick_host(&self, rng: &mut SplitMix64) -> usize {
        let total = *self.host_cum.last().expect("at least one host");
        let r = rng.below(total);
        self.host_cum.partition_point(|&c| c <= r)
    }

    /// The host that sends `seq` (same answer as [`TrafficModel::write`], but cheaper).
    pub fn host_of(&self, seq: u64) -> usize {
        self.pick_host(&mut self.rng_for(seq))
    }

    /// Appends datagram `seq` to `out` (no trailing newline; never contains `\n`).
    pub fn write(&self, seq: u64, out: &mut Vec<u8>) -> Generated {
        let mut rng = self.rng_for(seq);
        let host = self.pick_host(&mut rng);
        let mix = if self.schedule.is_login_burst(seq) {
            &MIX_LOGIN_BURST
        } else {
            &MIX_STEADY
        };
        let command = {
            let r = rng.below(1000);
            let mut acc = 0;
            let mut chosen = Command::CloseConnection;
            for (c, w) in Command::ALL.iter().zip(mix) {
                acc += w;
                if r < acc {
                    chosen = *c;
                    break;
                }
            }
            chosen
        };
        // Users: a mild skew (min of two draws) so some users are much more active.
        let users = u64::from(self.cfg.users.max(1));
        let user = rng.below(users).min(rng.below(users));
        let dir = if user % 4 == 3 { "CORP" } else { "LAB" };
        // Popular apps get opened more often.
        let apps = self.app_ids.len() as u64;
        let app = &self.app_ids[rng.below(apps).min(rng.below(apps)) as usize];
        let ua = {
            // A user keeps their browser.
            let mut urng = SplitMix64::new(self.cfg.seed ^ 0x05E2 ^ (user << 16));
            let r = urng.below(u64::from(*self.ua_cum.last().expect("user agents")));
            USER_AGENTS[self.ua_cum.partition_point(|&c| u64::from(c) <= r)].1
        };
        let host_name = &self.host_names[host];
        let mut num = itoa::Buffer::new();

        out.extend_from_slice(command.message_type().as_bytes());
        out.push(b';');
        out.extend_from_slice(host_name.as_bytes());
        out.push(b';');
        out.extend_from_slice(command.as_str().as_bytes());
        out.push(b';');
        out.extend_from_slice(dir.as_bytes());
        out.push(b';');
        let wire_seq = self.cfg.seq_base.wrapping_add(seq);
        let uid_start = out.len();
        match self.cfg.seq_in {
            SeqIn::User => {
                out.push(b's');
                out.extend_from_slice(num.format(wire_seq).as_bytes());
            }
            SeqIn::Message => {
                out.extend_from_slice(b"user");
                let s = num.format(user);
                for _ in s.len()..self.user_digits {
                    out.push(b'0');
                }
                out.extend_from_slice(s.as_bytes());
            }
        }
        let uid_end = out.len();
        out.push(b';');

        // Origin + context: an app (AppAccess, /app/<guid>?reloaduri=...) or the hub.
        let app_access = match command {
            Command::StartSession | Command::StopSession => rng.below(100) < 30,
            Command::OpenConnection | Command::CloseConnection => rng.below(100) < 80,
        };
        if app_access {
            out.extend_from_slice(b"AppAccess;/app/");
            out.extend_from_slice(app.as_bytes());
            out.extend_from_slice(b"?reloaduri=https%3a%2f%2f");
            out.extend_from_slice(host_name.as_bytes());
            out.extend_from_slice(b"%2fsense%2fapp%2f");
            out.extend_from_slice(app.as_bytes());
            out.extend_from_slice(b"%2fsheet%2f");
            for _ in 0..5 {
                out.push(SHEET_ALPHABET[rng.below(SHEET_ALPHABET.len() as u64) as usize]);
            }
            out.extend_from_slice(b"%2fstate%2fanalysis;");
        } else {
            let ctx: &[u8] = match rng.below(3) {
                0 => b"/hub/",
                1 => b"/hub/my/work",
                _ => b"/hub/stream/aaec8d41-5201-43ab-809f-3063750dfafd",
            };
            out.extend_from_slice(b"Hub;");
            out.extend_from_slice(ctx);
            out.push(b';');
        }

        // Message: seq + run prefix, then what the proxy writes.
        out.extend_from_slice(b"seq=");
        out.extend_from_slice(num.format(wire_seq).as_bytes());
        out.extend_from_slice(b" run=");
        out.extend_from_slice(self.cfg.run_id.as_bytes());
        out.push(b' ');
        match command {
            Command::StartSession | Command::StopSession => {
                out.extend_from_slice(command.as_str().as_bytes());
                out.extend_from_slice(b" for user '");
                out.extend_from_slice(dir.as_bytes());
                out.push(b'\\');
                out.extend_from_within(uid_start..uid_end);
                out.push(b'\'');
            }
            Command::OpenConnection | Command::CloseConnection => {
                out.extend_from_slice(if app_access { b"AppAccess" } else { b"Hub" });
                out.extend_from_slice(if command == Command::OpenConnection {
                    b" connection Opened for session '"
                } else {
                    b" connection Closed for session '"
                });
                out.extend_from_slice(uuid_v4(&mut rng).as_bytes());
                out.extend_from_slice(b"'. UserAgent: '");
                out.extend_from_slice(ua.as_bytes());
                out.push(b'\'');
            }
        }
        Generated { host, command }
    }
}

/// A random version-4 UUID, lower-case, hyphenated 8-4-4-4-12.
pub fn uuid_v4(rng: &mut SplitMix64) -> String {
    let hi = rng.next_u64();
    let lo = rng.next_u64();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // variant 10xx
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[usize::from(byte >> 4)] as char);
        s.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    s
}

/// A run id: 8 hex digits from the clock and the process id (differs between runs even with
/// the same `--seed`).
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = SplitMix64::new(nanos ^ (u64::from(std::process::id()) << 32));
    format!("{:08x}", rng.next_u64() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(seq_in: SeqIn, pattern: Pattern) -> TrafficModel {
        let schedule = Schedule::new(pattern, 1000, Duration::from_secs(10)).unwrap();
        TrafficModel::new(
            ModelConfig {
                hosts: 5,
                users: 300,
                apps: 20,
                seed: 7,
                seq_base: 0,
                seq_in,
                run_id: "0badcafe".into(),
            },
            schedule,
        )
    }

    /// The strict check Butler SOS applies (uuid npm `validate`), restricted to v4 here.
    fn is_valid_v4(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 36
            && b.iter().enumerate().all(|(i, &c)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    c == b'-'
                } else {
                    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
                }
            })
            && b[14] == b'4'
            && matches!(b[19], b'8' | b'9' | b'a' | b'b')
    }

    /// Splits like Butler SOS: the first 7 `;` separate fields, the rest is the message.
    fn split8(d: &str) -> Vec<&str> {
        d.splitn(8, ';').collect()
    }

    #[test]
    fn generates_valid_eight_field_datagrams_with_all_four_commands() {
        let m = model(SeqIn::Message, Pattern::Steady);
        let mut seen = [0u64; 4];
        let mut buf = Vec::new();
        for seq in 0..5000 {
            buf.clear();
            let g = m.write(seq, &mut buf);
            let d = std::str::from_utf8(&buf).expect("utf-8");
            assert!(!d.contains('\n') && !d.contains('\r'), "{d}");
            let f = split8(d);
            assert_eq!(f.len(), 8, "{d}");
            assert_eq!(f[0], g.command.message_type());
            assert_eq!(f[1], m.host_names()[g.host]);
            assert_eq!(f[2], g.command.as_str());
            assert!(f[3] == "LAB" || f[3] == "CORP");
            assert!(f[4].starts_with("user") && f[4].len() == 8, "{}", f[4]);
            assert!(!f[5].is_empty());
            assert!(f[6].len() <= 500 && f[7].len() <= 1000);
            assert!(f[7].starts_with(&format!("seq={seq} run=0badcafe ")), "{}", f[7]);
            if let Some(rest) = f[6].strip_prefix("/app/") {
                let id = rest.split('?').next().unwrap();
                assert!(is_valid_v4(id), "{id}");
                assert_eq!(f[5], "AppAccess");
            }
            if matches!(g.command, Command::OpenConnection | Command::CloseConnection) {
                let ua = f[7].split("UserAgent: '").nth(1).expect("user agent");
                assert!(ua.starts_with("Mozilla/5.0 (") && ua.ends_with('\''), "{ua}");
                let session = f[7].split("session '").nth(1).unwrap();
                assert!(is_valid_v4(&session[..36]));
            }
            assert_eq!(m.host_of(seq), g.host);
            seen[Command::ALL.iter().position(|&c| c == g.command).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
        // Connections are more frequent than sessions.
        assert!(seen[2] > 2 * seen[0] && seen[3] > 2 * seen[1], "{seen:?}");
        assert!(m.app_ids().iter().all(|a| is_valid_v4(a)));
    }

    #[test]
    fn seq_in_user_puts_s_seq_in_the_user_id_field() {
        let m = model(SeqIn::User, Pattern::Steady);
        let mut buf = Vec::new();
        m.write(4242, &mut buf);
        let d = String::from_utf8(buf).unwrap();
        assert_eq!(split8(&d)[4], "s4242");
        let mut cfg = m.cfg.clone();
        cfg.seq_base = 1_000_000;
        let m = TrafficModel::new(cfg, m.schedule.clone());
        let mut buf = Vec::new();
        m.write(7, &mut buf);
        let d = String::from_utf8(buf).unwrap();
        assert_eq!(split8(&d)[4], "s1000007");
        assert!(split8(&d)[7].starts_with("seq=1000007 run="));
    }

    #[test]
    fn same_seed_same_datagrams() {
        let (a, b) = (
            model(SeqIn::Message, Pattern::Steady),
            model(SeqIn::Message, Pattern::Steady),
        );
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for seq in [0, 1, 999, 123_456] {
            a.write(seq, &mut x);
            b.write(seq, &mut y);
        }
        assert_eq!(x, y);
    }

    #[test]
    fn every_host_gets_traffic_with_a_mild_skew() {
        let m = model(SeqIn::Message, Pattern::Steady);
        let mut per = [0u32; 5];
        for seq in 0..10_000 {
            per[m.host_of(seq)] += 1;
        }
        assert!(per.iter().all(|&n| n > 1000), "{per:?}");
        assert!(per[0] > per[4], "{per:?}");
    }

    #[test]
    fn steady_schedule_spaces_datagrams_evenly() {
        let s = Schedule::new(Pattern::Steady, 2000, Duration::from_millis(500)).unwrap();
        assert_eq!(s.total(), 1000);
        assert_eq!(s.intended_ns(0), 0);
        assert_eq!(s.intended_ns(1), 500_000);
        assert_eq!(s.intended_ns(999), 499_500_000);
    }

    #[test]
    fn storm_keeps_the_total_and_bursts_five_times_faster() {
        let s = Schedule::new(Pattern::Storm, 9000, Duration::from_secs(10)).unwrap();
        assert_eq!(s.total(), 90_000);
        let burst = (0..s.total()).take_while(|&q| s.is_login_burst(q)).count() as u64;
        assert_eq!(burst, 50_000);
        // Burst: 50k in 2 s = 25k/s; rest: 40k in 8 s = 5k/s.
        assert_eq!(s.intended_ns(burst - 1), 2_000_000_000 - 40_000);
        assert_eq!(s.intended_ns(burst), 2_000_000_000);
        assert_eq!(s.intended_ns(burst + 1), 2_000_000_000 + 200_000);
        assert!((1..s.total()).all(|q| s.intended_ns(q) >= s.intended_ns(q - 1)));
        let m = TrafficModel::new(
            ModelConfig {
                hosts: 2,
                users: 10,
                apps: 3,
                seed: 1,
                seq_base: 0,
                seq_in: SeqIn::Message,
                run_id: "r".into(),
            },
            s,
        );
        let mut buf = Vec::new();
        let logins = (0..1000)
            .filter(|&q| {
                let c = m.write(q, &mut buf).command;
                matches!(c, Command::StartSession | Command::OpenConnection)
            })
            .count();
        assert!(logins > 850, "{logins}");
    }

    #[test]
    fn zero_datagrams_is_an_error_naming_the_arguments() {
        let e = Schedule::new(Pattern::Steady, 1, Duration::from_millis(500)).unwrap_err();
        assert!(e.contains("--rate") && e.contains("--duration"), "{e}");
    }
}
