//! The demo's schedule: every login attempt of legitimate users and attackers, in time order.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use stepup_geo::great_circle_km;

use super::world::{ATTACK_AGENTS, BROWSER_AGENTS, Place, Pools, User};

/// Days of history every user builds before the first attack.
const WARM_UP_DAYS: i64 = 4;

/// Actor behind an attempt. The summary scores the engine on the attack labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// The account owner.
    Legitimate,
    /// Someone with the password logging in from far away minutes after the owner.
    ImpossibleTravel,
    /// Someone with the password logging in from a cloud or VPS address on a new device.
    NewDeviceHosting,
    /// One address trying a common password against many accounts.
    PasswordSpraying,
}

impl Label {
    /// Every label, legitimate first.
    pub const ALL: [Label; 4] = [
        Label::Legitimate,
        Label::ImpossibleTravel,
        Label::NewDeviceHosting,
        Label::PasswordSpraying,
    ];

    /// Returns the snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Legitimate => "legitimate",
            Label::ImpossibleTravel => "impossible_travel",
            Label::NewDeviceHosting => "new_device_hosting",
            Label::PasswordSpraying => "password_spraying",
        }
    }
}

/// Credential the actor has, which sets the results sent after the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// Right password; passes MFA when asked.
    Owner,
    /// Owner mistyping: wrong password, retried right after.
    OwnerTypo,
    /// Right password (stolen); fails MFA when asked.
    Stolen,
    /// Wrong password.
    Guess,
}

/// Whose typing rhythm the attempt's password timings come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Typist {
    /// The account owner, user number `0`.
    Owner(usize),
    /// Someone else typing user number `0`'s password; `1` picks which other subject.
    Other(usize, u32),
    /// No timings (scripts and bots).
    Nobody,
}

/// One planned login attempt.
#[derive(Clone, Debug)]
pub struct PlannedAttempt {
    pub at: DateTime<Utc>,
    pub user_id: String,
    pub place: Place,
    pub user_agent: &'static str,
    pub device_id: Option<String>,
    pub admin: bool,
    pub label: Label,
    pub credential: Credential,
    pub typist: Typist,
}

/// Returns the first instant of the demo's simulated time.
pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0)
        .single()
        .expect("a valid fixed date")
}

/// Builds the whole schedule for `days` days, sorted by time.
pub fn build(
    users: &[User],
    pools: &Pools,
    days: i64,
    rng: &mut ChaCha8Rng,
) -> Vec<PlannedAttempt> {
    let mut plan = Vec::new();
    for (index, user) in users.iter().enumerate() {
        legitimate_logins(index, user, pools, days, rng, &mut plan);
    }
    let attack_from = start_time() + Duration::days(WARM_UP_DAYS.min(days - 1));
    let owner_logins: Vec<PlannedAttempt> = plan
        .iter()
        .filter(|attempt| attempt.at >= attack_from && attempt.credential == Credential::Owner)
        .cloned()
        .collect();
    let victims = (users.len() / 20).max(1);
    for owner in owner_logins.choose_multiple(rng, victims) {
        if let Some(attack) = impossible_travel(owner, pools, rng) {
            plan.push(attack);
        }
    }
    for owner in owner_logins.choose_multiple(rng, victims) {
        if let Some(attack) = hosting_takeover(owner, pools, rng) {
            plan.push(attack);
        }
    }
    let span_minutes = (days - WARM_UP_DAYS).max(1) * 24 * 60;
    for _ in 0..2 {
        let at = attack_from + Duration::minutes(rng.random_range(0..span_minutes));
        password_spraying(users, pools, at, rng, &mut plan);
    }
    plan.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.user_id.cmp(&b.user_id)));
    plan
}

fn legitimate_logins(
    index: usize,
    user: &User,
    pools: &Pools,
    days: i64,
    rng: &mut ChaCha8Rng,
    plan: &mut Vec<PlannedAttempt>,
) {
    let trip = plan_trip(user, pools, days, rng);
    for day in 0..days {
        let logins = poisson(user.logins_per_day, rng);
        for _ in 0..logins {
            let hour = (user.usual_hour_utc + rng.random_range(-2.5..2.5)).rem_euclid(24.0);
            let at = start_time() + Duration::days(day) + Duration::seconds((hour * 3600.0) as i64);
            let place = match &trip {
                Some((from, to, place)) if at >= *from && at < *to => place.clone(),
                // No login during the flights there and back.
                Some((from, _, _)) if at < *from && at > *from - Duration::hours(18) => continue,
                Some((_, to, _)) if at >= *to && at < *to + Duration::hours(18) => continue,
                _ => user
                    .home
                    .choose(rng)
                    .cloned()
                    .unwrap_or_else(|| user.home[0].clone()),
            };
            let new_phone = rng.random_bool(0.02);
            let device = user.devices.choose(rng).expect("every user has a device");
            let (device_id, user_agent) = if new_phone {
                (
                    format!("{}-new-{}", device.id, rng.random::<u16>()),
                    BROWSER_AGENTS[3],
                )
            } else {
                (device.id.clone(), device.user_agent)
            };
            let attempt = PlannedAttempt {
                at,
                user_id: user.id.clone(),
                place,
                user_agent,
                device_id: Some(device_id),
                admin: user.admin,
                label: Label::Legitimate,
                credential: Credential::Owner,
                typist: Typist::Owner(index),
            };
            if rng.random_bool(0.03) {
                let typo = PlannedAttempt {
                    credential: Credential::OwnerTypo,
                    ..attempt.clone()
                };
                plan.push(typo);
                plan.push(PlannedAttempt {
                    at: attempt.at + Duration::seconds(15),
                    ..attempt
                });
            } else {
                plan.push(attempt);
            }
        }
    }
}

/// Picks a trip for about one user in twenty-five: three days in a city 500 km or more away.
fn plan_trip(
    user: &User,
    pools: &Pools,
    days: i64,
    rng: &mut ChaCha8Rng,
) -> Option<(DateTime<Utc>, DateTime<Utc>, Place)> {
    if days < 8 || !rng.random_bool(0.04) {
        return None;
    }
    let place = pools.far_place(&user.home[0], 500.0, rng)?;
    let start = start_time() + Duration::days(rng.random_range(WARM_UP_DAYS..days - 3));
    Some((start, start + Duration::days(3), place))
}

fn impossible_travel(
    owner: &PlannedAttempt,
    pools: &Pools,
    rng: &mut ChaCha8Rng,
) -> Option<PlannedAttempt> {
    let place = pools.far_place(&owner.place, 3000.0, rng)?;
    let distance = great_circle_km(
        (owner.place.latitude, owner.place.longitude),
        (place.latitude, place.longitude),
    );
    // Arrive well before an airliner could: at most half the time a 900 km/h flight takes.
    let max_minutes = ((distance / 900.0) * 30.0).max(45.0) as i64;
    Some(PlannedAttempt {
        at: owner.at + Duration::minutes(rng.random_range(40..=max_minutes)),
        place,
        user_agent: BROWSER_AGENTS
            .choose(rng)
            .copied()
            .unwrap_or(BROWSER_AGENTS[0]),
        device_id: Some(format!("atk-{}", rng.random::<u32>())),
        label: Label::ImpossibleTravel,
        credential: Credential::Stolen,
        typist: impostor(owner, rng),
        ..owner.clone()
    })
}

fn hosting_takeover(
    owner: &PlannedAttempt,
    pools: &Pools,
    rng: &mut ChaCha8Rng,
) -> Option<PlannedAttempt> {
    let place = pools.hosting.choose(rng)?.clone();
    let device_id = rng
        .random_bool(0.5)
        .then(|| format!("bot-{}", rng.random::<u32>()));
    Some(PlannedAttempt {
        at: owner.at + Duration::hours(rng.random_range(2..48)),
        place,
        user_agent: ATTACK_AGENTS
            .choose(rng)
            .copied()
            .unwrap_or(ATTACK_AGENTS[0]),
        device_id,
        label: Label::NewDeviceHosting,
        credential: Credential::Stolen,
        typist: impostor(owner, rng),
        ..owner.clone()
    })
}

fn password_spraying(
    users: &[User],
    pools: &Pools,
    at: DateTime<Utc>,
    rng: &mut ChaCha8Rng,
    plan: &mut Vec<PlannedAttempt>,
) {
    let Some(place) = pools.hosting.choose(rng).cloned() else {
        return;
    };
    let targets = rng.random_range(30..60).min(users.len());
    for (n, user) in users.choose_multiple(rng, targets).enumerate() {
        plan.push(PlannedAttempt {
            at: at + Duration::seconds(20 * n as i64),
            user_id: user.id.clone(),
            place: place.clone(),
            user_agent: ATTACK_AGENTS[2],
            device_id: None,
            admin: user.admin,
            label: Label::PasswordSpraying,
            credential: Credential::Guess,
            typist: Typist::Nobody,
        });
    }
}

/// Picks someone other than the owner to type the owner's password.
fn impostor(owner: &PlannedAttempt, rng: &mut ChaCha8Rng) -> Typist {
    match owner.typist {
        Typist::Owner(index) => Typist::Other(index, rng.random()),
        other => other,
    }
}

/// Draws from a Poisson distribution with mean `mean` (Knuth's method; fine for small means).
fn poisson(mean: f64, rng: &mut ChaCha8Rng) -> u32 {
    let limit = (-mean).exp();
    let mut product = rng.random::<f64>();
    let mut count = 0;
    while product > limit {
        product *= rng.random::<f64>();
        count += 1;
    }
    count
}
