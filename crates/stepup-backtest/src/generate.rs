//! Synthetic event streams for benchmarks and tests (`stepup backtest --generate N`).
//!
//! The stream is a deterministic function of the options. Users log in from one or two home
//! addresses and devices and sometimes travel. A small pool of attacker addresses sends bursts
//! of password spraying and some credential stuffing. Sensitive actions and device trust
//! changes are mixed in. Every attempt is followed by its result, some by an MFA result. Addresses are random public IPv4 addresses,
//! so the GeoIP databases place most of them somewhere. Events are written in time order.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use stepup_events::{
    Action, Attributes, DeviceChange, DeviceOp, Event, EventBody, Factor, LoginAttempt,
    LoginResult, MfaResult, SCHEMA_VERSION,
};

use crate::output::OutputError;

/// Browser user agents of legitimate users.
const BROWSER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
     Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) \
     Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 \
     (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
     Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
     Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
];

/// User agents of attack tools.
const ATTACK_AGENTS: [&str; 2] = ["python-requests/2.32.3", "curl/8.5.0"];

/// Action names, sensitive first.
const ACTIONS: [&str; 4] = [
    "change_password",
    "add_payee",
    "view_statement",
    "update_profile",
];

/// Addresses in the attackers' pool.
const ATTACKER_ADDRESSES: usize = 64;

/// Options of a generated stream.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Number of events to write.
    pub events: u64,
    /// Seed of the random generator; the same seed gives the same file.
    pub seed: u64,
    /// Number of users; default one per 40 events, at least 10.
    pub users: Option<u64>,
    /// Time of the first event.
    pub start: DateTime<Utc>,
    /// Time the stream spans, in days.
    pub days: u32,
}

/// Counts of a generated stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GenerateStats {
    /// Events written.
    pub events: u64,
    /// Users in the stream.
    pub users: u64,
    /// Login attempts from the attackers' pool.
    pub attack_attempts: u64,
}

/// A generated legitimate user.
struct User {
    id: String,
    homes: Vec<IpAddr>,
    devices: Vec<(String, &'static str)>,
    admin: bool,
}

/// The generator's state.
struct Generator<W: Write> {
    rng: ChaCha8Rng,
    out: W,
    users: Vec<User>,
    attackers: Vec<IpAddr>,
    now: DateTime<Utc>,
    mean_gap_ms: f64,
    next_id: u64,
    stats: GenerateStats,
    limit: u64,
}

// === impl GenerateOptions ===

impl GenerateOptions {
    /// Returns options for `events` events from seed 1, starting 2026-01-05 and spanning 30
    /// days.
    pub fn new(events: u64) -> Self {
        Self {
            events,
            seed: 1,
            users: None,
            start: Utc
                .with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
                .single()
                .expect("a valid fixed date"),
            days: 30,
        }
    }
}

/// Writes a synthetic NDJSON event stream to `path`.
pub fn generate_events(
    path: &Path,
    options: &GenerateOptions,
) -> Result<GenerateStats, OutputError> {
    let io_error = |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(path).map_err(io_error)?;
    let mut generator = Generator::new(BufWriter::new(file), options);
    while generator.stats.events < generator.limit {
        generator.step().map_err(io_error)?;
    }
    generator.out.flush().map_err(io_error)?;
    Ok(generator.stats)
}

// === impl Generator ===

impl<W: Write> Generator<W> {
    fn new(out: W, options: &GenerateOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let user_count = options.users.unwrap_or(options.events / 40).max(10);
        let users = (0..user_count).map(|n| new_user(&mut rng, n)).collect();
        let attackers = (0..ATTACKER_ADDRESSES)
            .map(|_| public_ipv4(&mut rng))
            .collect();
        // About 2.2 events per step, spread over the span.
        let span_ms = f64::from(options.days) * 86_400_000.0;
        let steps = (options.events as f64 / 2.2).max(1.0);
        Self {
            rng,
            out,
            users,
            attackers,
            now: options.start,
            mean_gap_ms: span_ms / steps,
            next_id: 0,
            stats: GenerateStats {
                users: user_count,
                ..GenerateStats::default()
            },
            limit: options.events,
        }
    }

    /// Writes one scenario: a login with its results, an attack, an action or a trust change.
    fn step(&mut self) -> std::io::Result<()> {
        let gap = self.rng.random_range(0.0..2.0 * self.mean_gap_ms);
        self.now += Duration::milliseconds(gap as i64);
        let user = self.rng.random_range(0..self.users.len());
        match self.rng.random_range(0..1000) {
            0..820 => self.home_login(user),
            820..880 => self.travel_login(user),
            880..885 => self.spray_campaign(),
            885..905 => self.stuffing(user),
            905..965 => self.action(user),
            _ => self.trust_device(user),
        }
    }

    fn home_login(&mut self, user: usize) -> std::io::Result<()> {
        let ip = pick(&mut self.rng, &self.users[user].homes);
        let device = pick(&mut self.rng, &self.users[user].devices);
        let device_id = self.rng.random_bool(0.9).then_some(device.0);
        if self.rng.random_bool(0.05) {
            let failed = self.attempt(user, ip, device.1, device_id.clone())?;
            self.result(user, &failed, false)?;
        }
        let attempt = self.attempt(user, ip, device.1, device_id)?;
        self.result(user, &attempt, true)?;
        // Some users complete a second factor after the password, so their profiles learn.
        if self.rng.random_bool(0.2) {
            self.mfa(user, &attempt)?;
        }
        Ok(())
    }

    fn travel_login(&mut self, user: usize) -> std::io::Result<()> {
        let ip = public_ipv4(&mut self.rng);
        let known = pick(&mut self.rng, &self.users[user].devices);
        let device = if self.rng.random_bool(0.3) {
            (format!("dev-travel-{}", self.next_id), known.1)
        } else {
            known
        };
        let attempt = self.attempt(user, ip, device.1, Some(device.0))?;
        self.result(user, &attempt, true)?;
        if self.rng.random_bool(0.7) {
            self.mfa(user, &attempt)?;
        }
        Ok(())
    }

    /// Writes a burst of failed attempts from one attacker address against random accounts, a
    /// few seconds apart.
    fn spray_campaign(&mut self) -> std::io::Result<()> {
        let ip = pick(&mut self.rng, &self.attackers);
        let agent = pick(&mut self.rng, &ATTACK_AGENTS);
        for _ in 0..self.rng.random_range(5..40) {
            self.now += Duration::milliseconds(self.rng.random_range(1_000..5_000));
            let user = self.rng.random_range(0..self.users.len());
            self.stats.attack_attempts += 1;
            let attempt = self.attempt(user, ip, agent, None)?;
            self.result(user, &attempt, false)?;
        }
        Ok(())
    }

    /// Writes a successful login from an attacker address with a stolen password.
    fn stuffing(&mut self, user: usize) -> std::io::Result<()> {
        let ip = pick(&mut self.rng, &self.attackers);
        let agent = pick(&mut self.rng, &BROWSER_AGENTS);
        self.stats.attack_attempts += 1;
        let attempt = self.attempt(user, ip, agent, None)?;
        self.result(user, &attempt, true)
    }

    fn action(&mut self, user: usize) -> std::io::Result<()> {
        let ip = pick(&mut self.rng, &self.users[user].homes);
        let name = pick(&mut self.rng, &ACTIONS);
        let body = EventBody::Action(Action {
            name: name.to_owned(),
            session_id: format!("session-{}", self.next_id),
            ip: Some(ip),
            attributes: Default::default(),
        });
        self.emit(user, 0, body).map(drop)
    }

    fn trust_device(&mut self, user: usize) -> std::io::Result<()> {
        let device = pick(&mut self.rng, &self.users[user].devices);
        let body = EventBody::Device(DeviceChange {
            device_id: device.0,
            op: DeviceOp::Trust,
            trusted_until: Some(self.now + Duration::days(30)),
        });
        self.emit(user, 0, body).map(drop)
    }

    fn attempt(
        &mut self,
        user: usize,
        ip: IpAddr,
        user_agent: &str,
        device_id: Option<String>,
    ) -> std::io::Result<String> {
        let roles = if self.users[user].admin {
            vec!["admin".to_owned()]
        } else {
            Vec::new()
        };
        let body = EventBody::LoginAttempt(LoginAttempt {
            ip,
            user_agent: user_agent.to_owned(),
            device_id,
            keystroke: None,
            attributes: Attributes {
                roles,
                ..Attributes::default()
            },
        });
        self.emit(user, 0, body)
    }

    fn result(&mut self, user: usize, attempt_id: &str, success: bool) -> std::io::Result<()> {
        let delay = self.rng.random_range(200..1500);
        let body = EventBody::LoginResult(LoginResult {
            attempt_id: attempt_id.to_owned(),
            success,
            reason: (!success).then(|| "bad_password".to_owned()),
            ip: None,
        });
        self.emit(user, delay, body).map(drop)
    }

    fn mfa(&mut self, user: usize, attempt_id: &str) -> std::io::Result<()> {
        let delay = self.rng.random_range(5_000..30_000);
        let body = EventBody::MfaResult(MfaResult {
            attempt_id: Some(attempt_id.to_owned()),
            factor: Factor::Totp,
            passed: true,
        });
        self.emit(user, delay, body).map(drop)
    }

    /// Writes one event `delay_ms` after the previous one and returns its id.
    fn emit(&mut self, user: usize, delay_ms: i64, body: EventBody) -> std::io::Result<String> {
        let event_id = format!("gen-{:09}", self.next_id);
        self.next_id += 1;
        self.now += Duration::milliseconds(delay_ms);
        if self.stats.events >= self.limit {
            return Ok(event_id);
        }
        let event = Event {
            event_id: event_id.clone(),
            user_id: self.users[user].id.clone(),
            occurred_at: self.now,
            version: SCHEMA_VERSION,
            body,
        };
        self.out.write_all(&event.to_json())?;
        self.out.write_all(b"\n")?;
        self.stats.events += 1;
        Ok(event_id)
    }
}

fn new_user(rng: &mut ChaCha8Rng, number: u64) -> User {
    let homes = (0..rng.random_range(1..=2))
        .map(|_| public_ipv4(rng))
        .collect();
    let devices = (0..rng.random_range(1..=2))
        .map(|index| {
            let agent = BROWSER_AGENTS[rng.random_range(0..BROWSER_AGENTS.len())];
            (format!("dev-{number}-{index}"), agent)
        })
        .collect();
    User {
        id: format!("user-{number:07}"),
        homes,
        devices,
        admin: rng.random_bool(0.02),
    }
}

fn pick<T: Clone>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())].clone()
}

/// Returns a random IPv4 address outside the private, shared, loopback, link-local,
/// documentation, benchmarking, multicast and reserved ranges.
fn public_ipv4(rng: &mut ChaCha8Rng) -> IpAddr {
    loop {
        let ip = Ipv4Addr::from(rng.random::<u32>());
        let [first, second, ..] = ip.octets();
        let special = ip.is_private()
            || ip.is_loopback()
            || ip.is_link_local()
            || ip.is_documentation()
            || ip.is_multicast()
            || first == 0
            || first >= 240
            || (first == 100 && (64..128).contains(&second))
            || (first == 198 && (18..20).contains(&second));
        if !special {
            return IpAddr::V4(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::input::{EventReader, InputFormat};

    use super::*;

    fn generate(events: u64, seed: u64) -> (tempfile::TempDir, std::path::PathBuf, GenerateStats) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let options = GenerateOptions {
            seed,
            ..GenerateOptions::new(events)
        };
        let stats = generate_events(&path, &options).unwrap();
        (dir, path, stats)
    }

    #[test]
    fn writes_exactly_the_requested_valid_events_in_order() {
        let (_dir, path, stats) = generate(5_000, 7);
        let batch = EventReader::open(&path, InputFormat::Ndjson)
            .unwrap()
            .read_all()
            .unwrap();

        assert_eq!(stats.events, 5_000);
        assert_eq!(batch.events.len(), 5_000);
        assert!(batch.invalid.is_empty(), "{:?}", batch.invalid.first());
        let times: Vec<_> = batch.events.iter().map(|e| e.event.occurred_at).collect();
        assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
        assert!(stats.attack_attempts > 0);
    }

    #[test]
    fn same_seed_gives_same_bytes() {
        let (_a, first, _) = generate(2_000, 3);
        let (_b, second, _) = generate(2_000, 3);
        let (_c, other, _) = generate(2_000, 4);

        let first = std::fs::read(first).unwrap();
        assert_eq!(first, std::fs::read(second).unwrap());
        assert_ne!(first, std::fs::read(other).unwrap());
    }

    #[test]
    fn addresses_are_public() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..10_000 {
            let IpAddr::V4(ip) = public_ipv4(&mut rng) else {
                panic!("not IPv4")
            };
            assert!(!ip.is_private(), "{ip}");
            assert!(!ip.is_loopback(), "{ip}");
        }
    }
}
