//! The demo's world: real addresses found in the shipped GeoIP databases, grouped by city and
//! network, and the users who live there.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use stepup_geo::{Geo, NetworkClass, great_circle_km};

/// Random addresses probed when building the pools; enough to find a few thousand cities.
const PROBES: usize = 400_000;

/// Real browser user agents, one per device type.
pub const BROWSER_AGENTS: [&str; 8] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
];

/// User agents seen from automated attack tools.
pub const ATTACK_AGENTS: [&str; 4] = [
    "python-requests/2.32.3",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "curl/8.5.0",
];

/// An address with the place and network the databases give it.
#[derive(Clone, Debug)]
pub struct Place {
    pub ip: IpAddr,
    pub latitude: f64,
    pub longitude: f64,
}

/// Addresses found by probing, by kind.
pub struct Pools {
    /// Residential addresses grouped by `city, country`, only cities with several addresses.
    pub cities: Vec<Vec<Place>>,
    /// Addresses of hosting networks (clouds, VPS providers).
    pub hosting: Vec<Place>,
}

/// A device a user logs in from.
#[derive(Clone, Debug)]
pub struct Device {
    pub id: String,
    pub user_agent: &'static str,
}

/// A legitimate user and where they live.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub home: Vec<Place>,
    pub devices: Vec<Device>,
    /// Usual hour of the day, in UTC, around which this user logs in.
    pub usual_hour_utc: f64,
    /// Mean logins per day.
    pub logins_per_day: f64,
    pub admin: bool,
}

// === impl Pools ===

impl Pools {
    /// Probes random IPv4 addresses and keeps those the databases place in a city.
    pub fn probe(geo: &Geo, rng: &mut ChaCha8Rng) -> Self {
        let mut by_city: BTreeMap<(String, String, String), Vec<Place>> = BTreeMap::new();
        let mut hosting = Vec::new();
        for _ in 0..PROBES {
            let ip = IpAddr::V4(Ipv4Addr::from(rng.random::<u32>()));
            let info = geo.lookup(ip);
            let Some(location) = info.location else {
                continue;
            };
            let (Some(city), Some(country)) = (location.city, location.country) else {
                continue;
            };
            let place = Place {
                ip,
                latitude: location.latitude,
                longitude: location.longitude,
            };
            match info.network {
                NetworkClass::Hosting => hosting.push(place),
                NetworkClass::Residential if location.accuracy_km <= 100.0 => {
                    // Names repeat (Springfield, US), so the rounded position is part of the key.
                    let cell = format!("{:.1},{:.1}", location.latitude, location.longitude);
                    by_city
                        .entry((city, country, cell))
                        .or_default()
                        .push(place);
                }
                _ => {}
            }
        }
        let cities = by_city
            .into_values()
            .filter(|places| places.len() >= 3)
            .collect();
        Self { cities, hosting }
    }

    /// Returns a residential place at least `min_km` from `from`.
    pub fn far_place(&self, from: &Place, min_km: f64, rng: &mut ChaCha8Rng) -> Option<Place> {
        for _ in 0..64 {
            let city = self.cities.choose(rng)?;
            let place = city.choose(rng)?;
            let distance = great_circle_km(
                (from.latitude, from.longitude),
                (place.latitude, place.longitude),
            );
            if distance >= min_km {
                return Some(place.clone());
            }
        }
        None
    }
}

/// Creates `count` users homed in random cities of the pools.
pub fn make_users(pools: &Pools, count: usize, rng: &mut ChaCha8Rng) -> Vec<User> {
    (0..count)
        .filter_map(|index| {
            let city = pools.cities.choose(rng)?;
            let home: Vec<Place> = city.choose_multiple(rng, 2).cloned().collect();
            let device_count = rng.random_range(1..=2);
            let devices = (0..device_count)
                .map(|n| Device {
                    id: format!("dev-{index:05}-{n}"),
                    user_agent: BROWSER_AGENTS
                        .choose(rng)
                        .copied()
                        .unwrap_or(BROWSER_AGENTS[0]),
                })
                .collect();
            // Local 09:00 to 21:00, converted to UTC by the longitude (15 degrees an hour).
            let local_hour = rng.random_range(9.0..21.0);
            let usual_hour_utc = (local_hour - home[0].longitude / 15.0).rem_euclid(24.0);
            Some(User {
                id: format!("user-{index:05}"),
                home,
                devices,
                usual_hour_utc,
                logins_per_day: rng.random_range(0.4..2.0),
                admin: rng.random_bool(0.05),
            })
        })
        .collect()
}
