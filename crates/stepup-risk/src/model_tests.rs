use proptest::prelude::*;
use stepup_signals::{IpVelocity, Novelty, Profile, TravelSignal};

use super::*;
use crate::features::CountHistory;

const DEVICE: &str = "laptop-7f3a";

fn features(country: &str, device: Option<&str>) -> AttemptFeatures {
    AttemptFeatures {
        ip_prefix: 0x5eed,
        asn: Some(3320),
        country: Some(country.to_owned()),
        browser: "Firefox".into(),
        os: "Linux".into(),
        device: device.map(str::to_owned),
    }
}

/// Returns a history of `logins` verified logins from Germany on the usual device.
fn history(logins: usize) -> CountHistory {
    let mut history = CountHistory::default();
    for _ in 0..logins {
        history.learn(&features("DE", Some(DEVICE)), 64);
    }
    history
}

/// Returns a population of 1000 logins: 300 from DE, 31 from FR, the rest from the US, with
/// other users' prefixes and devices.
fn population() -> Population {
    let population = Population::new(10_000);
    for index in 0..1000u64 {
        let country = match index {
            0..300 => "DE",
            300..331 => "FR",
            _ => "US",
        };
        let mut login = features(country, Some("other-device"));
        login.ip_prefix = index;
        population.learn(&login);
    }
    population
}

fn model() -> RiskModel {
    RiskModel::default()
}

fn term<'a>(assessment: &'a RiskAssessment, feature: &str) -> Option<&'a Contribution> {
    assessment
        .contributions
        .iter()
        .find(|contribution| contribution.feature == feature)
}

fn assess(features: &AttemptFeatures, history: &CountHistory) -> RiskAssessment {
    model().assess_inputs(features, history, &population(), &SignalInputs::default())
}

#[test]
fn unseen_value_with_long_history_is_positive() {
    let assessment = assess(&features("FR", Some(DEVICE)), &history(42));

    let country = term(&assessment, "country").expect("a country term");
    // c = 0 gives ln p_pop − ln(α·p_pop / (n + α)) = ln((n + α) / α), whatever p_pop is.
    assert!(
        (country.log_odds - 43.0_f64.ln()).abs() < 1e-9,
        "{country:?}"
    );
    assert_eq!(
        country.detail,
        "country FR seen in 0 of 42 logins; 3.1% of population"
    );
    assert_eq!(assessment.top_factor, "country");
}

#[test]
fn often_seen_value_is_negative() {
    let assessment = assess(&features("DE", Some(DEVICE)), &history(42));

    let country = term(&assessment, "country").expect("a country term");
    // p_pop(DE) = 301 / 1004; p_user ≈ 1, so the term is close to ln 0.3.
    assert!(country.log_odds < -1.0, "{country:?}");
    assert!(country.log_odds > -1.3, "{country:?}");
    assert_eq!(
        country.detail,
        "country DE seen in 42 of 42 logins; 30.0% of population"
    );
    assert_eq!(assessment.top_factor, "none");
    assert!(assessment.log_odds < model().config().prior_log_odds);
}

#[test]
fn rare_seen_value_reassures_more_than_common_one() {
    let model = model();
    let population = population();
    let history = history(42);
    let inputs = SignalInputs::default();
    let de = model.assess_inputs(
        &features("DE", Some(DEVICE)),
        &history,
        &population,
        &inputs,
    );
    let mut fr_history = CountHistory::default();
    for _ in 0..42 {
        fr_history.learn(&features("FR", Some(DEVICE)), 64);
    }
    let fr = model.assess_inputs(
        &features("FR", Some(DEVICE)),
        &fr_history,
        &population,
        &inputs,
    );

    let de_term = term(&de, "country").unwrap().log_odds;
    let fr_term = term(&fr, "country").unwrap().log_odds;
    assert!(fr_term < de_term, "FR {fr_term} against DE {de_term}");
}

#[test]
fn first_login_has_no_history_terms() {
    let model = model();
    let inputs = SignalInputs::default();
    let attempt = features("FR", None);
    let counted = model.assess_inputs(&attempt, &CountHistory::default(), &population(), &inputs);
    let profiled = model.assess_inputs(&attempt, &Profile::default(), &population(), &inputs);

    for assessment in [&counted, &profiled] {
        assert!(assessment.contributions.is_empty(), "{assessment:?}");
        assert_eq!(assessment.log_odds, model.config().prior_log_odds);
        assert_eq!(assessment.score, logistic(model.config().prior_log_odds));
        assert_eq!(assessment.level, RiskLevel::Low);
        assert_eq!(assessment.top_factor, "none");
    }
}

#[test]
fn history_terms_are_clamped() {
    let config = RiskConfig::default();
    // The usual device is rare in the population, which would give about ln(1/1000) − 0.
    let known = assess(&features("DE", Some(DEVICE)), &history(42));
    let device = term(&known, "device").expect("a device term");
    assert_eq!(device.log_odds, config.history_term_min_log_odds);
    assert_eq!(
        device.detail,
        "device seen in 42 of 42 logins; 0.0% of population"
    );

    // ln(10001) ≈ 9.2 for an unseen value after 10000 logins, clamped to the maximum.
    let long = history(10_000);
    let unseen = assess(&features("FR", Some(DEVICE)), &long);
    let country = term(&unseen, "country").expect("a country term");
    assert_eq!(country.log_odds, config.history_term_max_log_odds);
}

#[test]
fn missing_device_counts_as_a_value() {
    let assessment = assess(&features("DE", None), &history(42));
    let device = term(&assessment, "device").expect("a device term");
    assert!((device.log_odds - 43.0_f64.ln()).abs() < 1e-9, "{device:?}");
    assert_eq!(
        device.detail,
        "no device id seen in 0 of 42 logins; 0.0% of population"
    );
}

#[test]
fn details_show_no_ip_prefix_or_device_id() {
    let mut attempt = features("FR", Some("stolen-device-id"));
    attempt.ip_prefix = 0xdead_beef;
    let assessment = assess(&attempt, &history(42));

    let prefix = term(&assessment, "ip_prefix").expect("an IP prefix term");
    assert_eq!(
        prefix.detail,
        "IP prefix seen in 0 of 42 logins; 0.0% of population"
    );
    for contribution in &assessment.contributions {
        assert!(!contribution.detail.contains("stolen"), "{contribution:?}");
        assert!(
            !contribution.detail.contains("deadbeef"),
            "{contribution:?}"
        );
        assert!(
            !contribution.detail.contains("3735928559"),
            "{contribution:?}"
        );
    }
}

#[test]
fn empty_population_still_flags_unseen_values() {
    let model = model();
    let empty = Population::new(100);
    let history = history(42);
    let inputs = SignalInputs::default();
    let unseen = model.assess_inputs(&features("FR", Some(DEVICE)), &history, &empty, &inputs);
    let seen = model.assess_inputs(&features("DE", Some(DEVICE)), &history, &empty, &inputs);

    let country = term(&unseen, "country").expect("a country term");
    assert!(
        (country.log_odds - 43.0_f64.ln()).abs() < 1e-9,
        "{country:?}"
    );
    assert!(country.detail.ends_with("population has no logins yet"));
    assert!(term(&seen, "country").is_none(), "{seen:?}");
}

#[test]
fn signal_terms_use_configured_weights() {
    let inputs = SignalInputs {
        travel_confidence: 0.5,
        travel_min_speed_kmh: 4200.0,
        user_failures: 9,
        ip_distinct_failed_users: 7,
        network: NetworkClass::Anonymous,
        keystroke: Some(0.75),
    };
    let assessment = model().assess_inputs(
        &features("DE", None),
        &CountHistory::default(),
        &population(),
        &inputs,
    );

    let expected = [
        (
            "impossible_travel",
            3.0,
            "travel at >= 4200 km/h, confidence 0.50",
        ),
        (
            "user_failures",
            2.5,
            "9 failed logins in the user failure window",
        ),
        (
            "ip_distinct_failed_users",
            2.5,
            "7 users with failed logins from this IP address in the IP window",
        ),
        ("network", 2.0, "network class anonymous"),
        (
            "keystroke",
            1.0,
            "keystroke score 0.75 against neutral 0.50",
        ),
    ];
    for (feature, log_odds, detail) in expected {
        let contribution = term(&assessment, feature).expect(feature);
        assert!(
            (contribution.log_odds - log_odds).abs() < 1e-12,
            "{contribution:?}"
        );
        assert_eq!(contribution.detail, detail);
    }
    assert_eq!(assessment.top_factor, "impossible_travel");
}

#[test]
fn assess_reads_engine_signals() {
    let travel = TravelSignal {
        from_city: Some("Berlin".into()),
        from_country: Some("DE".into()),
        to_city: Some("Sydney".into()),
        to_country: Some("AU".into()),
        distance_km: 16_000.0,
        min_distance_km: 15_900.0,
        elapsed_s: 3600.0,
        min_speed_kmh: 15_900.0,
        impossible: true,
        confidence: 0.9,
    };
    let signals = Signals {
        geo_known: true,
        travel: Some(travel),
        novelty: Novelty::default(),
        user_failures: 2,
        ip: IpVelocity {
            distinct_failed_users: 4,
            ..IpVelocity::default()
        },
        network: NetworkClass::Hosting,
        first_login: false,
        keystroke: None,
    };
    let inputs = SignalInputs::from_signals(&signals, Some(0.9));

    assert_eq!(inputs.travel_confidence, 0.9);
    assert_eq!(inputs.travel_min_speed_kmh, 15_900.0);
    assert_eq!(inputs.user_failures, 2);
    assert_eq!(inputs.ip_distinct_failed_users, 4);
    assert_eq!(inputs.network, NetworkClass::Hosting);
    assert_eq!(inputs.keystroke, Some(0.9));

    let mut attempt = features("AU", Some("unknown-device"));
    attempt.ip_prefix = 0xa0;
    let assessment = model().assess(&attempt, &history(42), &population(), &signals, Some(0.9));
    assert_eq!(
        assessment,
        model().assess_inputs(&attempt, &history(42), &population(), &inputs)
    );
    assert_eq!(assessment.level, RiskLevel::Critical);
}

#[test]
fn possible_travel_adds_nothing() {
    let signals = Signals {
        geo_known: true,
        travel: Some(TravelSignal {
            from_city: None,
            from_country: None,
            to_city: None,
            to_country: None,
            distance_km: 10.0,
            min_distance_km: 0.0,
            elapsed_s: 3600.0,
            min_speed_kmh: 0.0,
            impossible: false,
            confidence: 0.0,
        }),
        novelty: Novelty::default(),
        user_failures: 0,
        ip: IpVelocity::default(),
        network: NetworkClass::Residential,
        first_login: true,
        keystroke: None,
    };
    assert_eq!(
        SignalInputs::from_signals(&signals, None),
        SignalInputs::default()
    );
}

#[test]
fn rejects_invalid_config() {
    let config = RiskConfig {
        alpha: -1.0,
        ..RiskConfig::default()
    };
    let error = RiskModel::new(config).expect_err("a negative alpha must be rejected");
    assert!(error.to_string().contains("alpha"), "{error}");
}

#[test]
fn logistic_is_stable_at_extremes() {
    assert_eq!(logistic(0.0), 0.5);
    assert_eq!(logistic(800.0), 1.0);
    assert_eq!(logistic(-800.0), 0.0);
    assert!((logistic(-6.907_755_278_982_137) - 1.0 / 1001.0).abs() < 1e-15);
}

fn network_strategy() -> impl Strategy<Value = NetworkClass> {
    proptest::sample::select(NetworkClass::ALL.to_vec())
}

prop_compose! {
    fn inputs_strategy()(
        travel_confidence in 0.0..=1.0f64,
        user_failures in 0u32..20,
        ip_distinct_failed_users in 0u32..30,
        network in network_strategy(),
        keystroke in proptest::option::of(0.0..=1.0f64),
    ) -> SignalInputs {
        SignalInputs {
            travel_confidence,
            travel_min_speed_kmh: 2000.0,
            user_failures,
            ip_distinct_failed_users,
            network,
            keystroke,
        }
    }
}

prop_compose! {
    fn attempt_strategy()(
        country in proptest::sample::select(vec!["DE", "FR", "US", "KP"]),
        known_device in any::<bool>(),
        logins in 0usize..80,
    ) -> (AttemptFeatures, CountHistory) {
        let device = if known_device { DEVICE } else { "new-device" };
        (features(country, Some(device)), history(logins))
    }
}

proptest! {
    #[test]
    fn contributions_sum_to_log_odds(
        (attempt, history) in attempt_strategy(),
        inputs in inputs_strategy(),
    ) {
        let model = model();
        let assessment = model.assess_inputs(&attempt, &history, &population(), &inputs);
        let sum: f64 = assessment.contributions.iter().map(|c| c.log_odds).sum();
        let expected = model.config().prior_log_odds + sum;
        prop_assert!((assessment.log_odds - expected).abs() < 1e-9);
        prop_assert_eq!(assessment.score, logistic(assessment.log_odds));
        prop_assert!((0.0..=1.0).contains(&assessment.score));
        prop_assert!(assessment.contributions.iter().all(|c| c.log_odds != 0.0));
        let sorted = assessment
            .contributions
            .windows(2)
            .all(|pair| pair[0].log_odds >= pair[1].log_odds);
        prop_assert!(sorted);
    }

    #[test]
    fn score_is_monotone_in_each_signal(
        (attempt, history) in attempt_strategy(),
        base in inputs_strategy(),
        step in 0.0..=1.0f64,
        count_step in 0u32..10,
    ) {
        let model = model();
        let population = population();
        let before = model.assess_inputs(&attempt, &history, &population, &base);
        let raised = [
            SignalInputs {
                travel_confidence: (base.travel_confidence + step).min(1.0),
                ..base.clone()
            },
            SignalInputs { user_failures: base.user_failures + count_step, ..base.clone() },
            SignalInputs {
                ip_distinct_failed_users: base.ip_distinct_failed_users + count_step,
                ..base.clone()
            },
            SignalInputs {
                keystroke: Some((base.keystroke.unwrap_or(0.5) + step).min(1.0)),
                ..base.clone()
            },
        ];
        for (index, inputs) in raised.iter().enumerate() {
            let after = model.assess_inputs(&attempt, &history, &population, inputs);
            prop_assert!(after.log_odds >= before.log_odds, "signal {}", index);
            prop_assert!(after.score >= before.score, "signal {}", index);
        }
    }

    #[test]
    fn risky_networks_never_lower_the_score(
        (attempt, history) in attempt_strategy(),
        base in inputs_strategy(),
    ) {
        let model = model();
        let population = population();
        let score = |network| {
            let inputs = SignalInputs { network, ..base.clone() };
            model.assess_inputs(&attempt, &history, &population, &inputs).log_odds
        };
        let residential = score(NetworkClass::Residential);
        prop_assert!(score(NetworkClass::Hosting) >= residential);
        prop_assert!(score(NetworkClass::Anonymous) >= score(NetworkClass::Hosting));
    }
}

#[test]
fn typical_logins_get_expected_levels() {
    let mut new_phone = features("DE", Some("new-phone"));
    new_phone.browser = "Safari".into();
    new_phone.os = "iOS".into();
    let mut abroad = features("FR", Some(DEVICE));
    abroad.ip_prefix = 77;
    abroad.asn = Some(12322);
    let mut attacker = features("US", Some("attacker-device"));
    attacker.ip_prefix = 78;
    attacker.asn = Some(14061);
    let mut local_attacker = attacker.clone();
    local_attacker.country = Some("DE".into());

    // After 20 logins from one prefix, country, browser and device, with no other signal.
    let cases = [
        ("usual login", features("DE", Some(DEVICE)), RiskLevel::Low),
        ("new phone at home", new_phone, RiskLevel::Low),
        ("laptop abroad", abroad, RiskLevel::Low),
        (
            "attacker abroad, same browser",
            attacker,
            RiskLevel::Critical,
        ),
        (
            "attacker in the same country",
            local_attacker,
            RiskLevel::High,
        ),
    ];
    let history = history(20);
    for (name, attempt, level) in cases {
        let assessment = assess(&attempt, &history);
        assert_eq!(assessment.level, level, "{name}: {assessment:?}");
    }
}
