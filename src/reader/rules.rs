//! The receive rules a SIGHUP can change while the readers run: `userEvents.excludeUser`,
//! `udpServerConfig.enableSourceValidation`/`allowedSources`, `rateLimit`, and how long a reader lingers (from
//! `sense-ingest.batch.maxAge`).
//!
//! The reload thread builds a new [`Rules`] and [`LiveRules::replace`]s the current one; each reader keeps its own
//! `Arc<Rules>` and compares the generation counter once per datagram (one atomic load of a line that changes only
//! on reload), so checking a rule takes no lock and a reload never stops a reader. A datagram is judged by the
//! rules of one generation, never half of each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::{Config, ExcludedUser};
use crate::reader::admission::Admission;
use crate::reader::{linger_for, MAX_LINGER};

/// One generation of the reloadable rules.
#[derive(Debug)]
pub struct Rules {
    /// `userEvents.excludeUser`.
    pub excluded: Vec<ExcludedUser>,
    /// Source validation and rate limit (a reload starts the rate windows afresh).
    pub admission: Admission,
    /// How long a reader may keep a slab while datagrams keep coming ([`linger_for`] of the batch age).
    pub linger: Duration,
}

impl Default for Rules {
    /// No exclusions, every source admitted, the longest linger.
    fn default() -> Rules {
        Rules {
            excluded: Vec::new(),
            admission: Admission::default(),
            linger: MAX_LINGER,
        }
    }
}

impl Rules {
    /// The rules `config` asks for.
    pub fn from_config(config: &Config) -> Rules {
        let user_events = &config.user_events;
        Rules {
            excluded: user_events.exclude_users.clone(),
            admission: Admission::new(
                user_events.udp.allowed_sources.as_deref(),
                user_events.udp.rate_limit_per_minute,
            ),
            linger: linger_for(config.engine.batch.max_age),
        }
    }
}

/// The current [`Rules`], replaceable while readers run.
#[derive(Debug)]
pub struct LiveRules {
    generation: AtomicU64,
    current: RwLock<Arc<Rules>>,
}

impl LiveRules {
    /// Starts with `rules` (generation 0).
    pub fn new(rules: Rules) -> LiveRules {
        LiveRules {
            generation: AtomicU64::new(0),
            current: RwLock::new(Arc::new(rules)),
        }
    }

    /// Puts `rules` in force: readers pick them up before their next datagram.
    pub fn replace(&self, rules: Rules) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The generation now in force (changes on each [`LiveRules::replace`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The generation and the rules in force.
    pub fn snapshot(&self) -> (u64, Arc<Rules>) {
        let generation = self.generation();
        let rules = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
        (generation, rules)
    }
}
