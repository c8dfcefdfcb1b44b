//! Time of one risk assessment against a realistic profile and a filled population, and of
//! one population update.

use std::hint::black_box;
use std::net::IpAddr;

use chrono::{DateTime, Duration};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stepup_geo::{Asn, GeoInfo, Location, NetworkClass};
use stepup_risk::{AttemptFeatures, Population, RiskModel, SignalInputs};
use stepup_signals::{AttemptFacts, Profile, SignalConfig, UserAgentInfo};

const COUNTRIES: [&str; 8] = ["DE", "FR", "US", "GB", "NO", "NL", "PL", "JP"];
const BROWSERS: [&str; 4] = ["Chrome", "Firefox", "Safari", "Edge"];

fn geo(country: &str, asn: u32) -> GeoInfo {
    GeoInfo {
        location: Some(Location {
            latitude: 52.52,
            longitude: 13.405,
            accuracy_km: 20.0,
            city: Some("Berlin".into()),
            country: Some(country.to_owned()),
        }),
        asn: Some(Asn {
            number: asn,
            organization: None,
        }),
        network: NetworkClass::Residential,
    }
}

fn user_agent(browser: &str) -> UserAgentInfo {
    UserAgentInfo {
        browser: browser.to_owned(),
        os: "Windows".into(),
        category: "pc".into(),
    }
}

/// Returns a profile of 50 verified logins from two prefixes, one country and one laptop.
fn profile() -> Profile {
    let base = DateTime::from_timestamp(1_748_854_800, 0).expect("a valid timestamp");
    let home = geo("DE", 3320);
    let ua = user_agent("Firefox");
    let mut profile = Profile::default();
    for index in 0..50u8 {
        let facts = AttemptFacts {
            at: base + Duration::hours(i64::from(index) * 20),
            ip: IpAddr::from([198, 51, 100 + index % 2, 7]),
            geo: &home,
            ua: &ua,
            device_id: Some("laptop-7f3a"),
        };
        profile.learn_verified(&facts, &SignalConfig::default());
    }
    profile
}

/// Returns a population of 200k logins over 50k prefixes, 8 countries and 4 browsers.
fn population() -> Population {
    let population = Population::new(100_000);
    for index in 0..200_000u32 {
        let features = AttemptFeatures {
            ip_prefix: u64::from(index % 50_000),
            asn: Some(index % 3000),
            country: Some(COUNTRIES[index as usize % COUNTRIES.len()].to_owned()),
            browser: BROWSERS[index as usize % BROWSERS.len()].to_owned(),
            os: "Windows".into(),
            device: Some(format!("device-{}", index % 40_000)),
        };
        population.learn(&features);
    }
    population
}

fn attempt(ip: IpAddr, country: &str, asn: u32, browser: &str, device: &str) -> AttemptFeatures {
    let geo = geo(country, asn);
    let ua = user_agent(browser);
    let facts = AttemptFacts {
        at: DateTime::from_timestamp(1_760_000_000, 0).expect("a valid timestamp"),
        ip,
        geo: &geo,
        ua: &ua,
        device_id: Some(device),
    };
    AttemptFeatures::from_facts(&facts)
}

fn bench_assess(c: &mut Criterion) {
    let model = RiskModel::default();
    let profile = profile();
    let empty = Profile::default();
    let population = population();
    let inputs = SignalInputs::default();
    let familiar = attempt(
        IpAddr::from([198, 51, 100, 9]),
        "DE",
        3320,
        "Firefox",
        "laptop-7f3a",
    );
    let foreign = attempt(
        IpAddr::from([203, 0, 113, 5]),
        "JP",
        2516,
        "Chrome",
        "unknown-1",
    );

    let mut group = c.benchmark_group("assess");
    group.throughput(Throughput::Elements(1));
    group.bench_function("familiar_attempt", |b| {
        b.iter(|| model.assess_inputs(black_box(&familiar), &profile, &population, &inputs))
    });
    group.bench_function("foreign_attempt", |b| {
        b.iter(|| model.assess_inputs(black_box(&foreign), &profile, &population, &inputs))
    });
    group.bench_function("first_login", |b| {
        b.iter(|| model.assess_inputs(black_box(&foreign), &empty, &population, &inputs))
    });
    group.finish();

    let mut group = c.benchmark_group("population");
    group.throughput(Throughput::Elements(1));
    group.bench_function("learn", |b| {
        b.iter(|| population.learn(black_box(&familiar)))
    });
    group.finish();
}

criterion_group!(benches, bench_assess);
criterion_main!(benches);
