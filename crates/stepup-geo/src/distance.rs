//! Great-circle distance between two points given in degrees.

/// Mean Earth radius used for distances, in km: the IUGG mean radius R1 = (2a + b) / 3 of the
/// WGS-84 ellipsoid.
pub const EARTH_MEAN_RADIUS_KM: f64 = 6371.0088;

/// Returns the great-circle distance in km between two `(latitude, longitude)` points in degrees.
///
/// Uses the haversine formula on a sphere of radius [`EARTH_MEAN_RADIUS_KM`]. It differs from the
/// WGS-84 ellipsoidal distance by up to about 0.5%, far less than the uncertainty of IP
/// geolocation. A NaN coordinate gives NaN.
pub fn great_circle_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());

    let half_dlat = ((lat2 - lat1) / 2.0).sin();
    let half_dlon = ((lon2 - lon1) / 2.0).sin();
    let h = half_dlat * half_dlat + lat1.cos() * lat2.cos() * half_dlon * half_dlon;

    // Rounding can push `h` just past 1 for antipodal points, where asin would return NaN.
    // `clamp` keeps a NaN from the input, unlike `min`, which would turn it into 1.
    2.0 * EARTH_MEAN_RADIUS_KM * h.sqrt().clamp(0.0, 1.0).asin()
}

#[cfg(test)]
mod tests {
    use std::f64::consts::PI;

    use proptest::prelude::*;

    use super::*;

    const LONDON: (f64, f64) = (51.5074, -0.1278);
    const NEW_YORK: (f64, f64) = (40.7128, -74.0060);
    const SYDNEY: (f64, f64) = (-33.8688, 151.2093);
    const LOS_ANGELES: (f64, f64) = (34.0522, -118.2437);
    const PARIS: (f64, f64) = (48.8566, 2.3522);
    const BERLIN: (f64, f64) = (52.5200, 13.4050);
    const TOKYO: (f64, f64) = (35.6762, 139.6503);
    const SAO_PAULO: (f64, f64) = (-23.5505, -46.6333);

    /// Asserts that `actual` is within `percent` of `expected`.
    fn assert_within_percent(actual: f64, expected: f64, percent: f64, pair: &str) {
        let error = (actual - expected).abs() / expected * 100.0;
        assert!(
            error <= percent,
            "{pair}: got {actual:.1} km, reference {expected:.1} km, off by {error:.3}%"
        );
    }

    // Reference figures are WGS-84 ellipsoidal geodesic distances between the coordinates
    // above, computed with Karney's algorithm in the geographiclib 2.1 Python package
    // (`Geodesic.WGS84.Inverse`). They do not come from this formula, so the 0.5% tolerance
    // covers the sphere-versus-ellipsoid difference (at most 0.27% for these pairs).
    #[test]
    fn city_pairs_match_wgs84_geodesic() {
        let cases = [
            ("London-New York", LONDON, NEW_YORK, 5585.2),
            ("Sydney-Los Angeles", SYDNEY, LOS_ANGELES, 12063.1),
            ("Paris-Berlin", PARIS, BERLIN, 879.7),
            ("Tokyo-Sao Paulo", TOKYO, SAO_PAULO, 18533.5),
        ];
        for (pair, a, b, reference_km) in cases {
            assert_within_percent(great_circle_km(a, b), reference_km, 0.5, pair);
        }
    }

    #[test]
    fn antipodes_are_half_circumference_apart() {
        let half = PI * EARTH_MEAN_RADIUS_KM;
        let equator = great_circle_km((0.0, 0.0), (0.0, 180.0));
        let poles = great_circle_km((90.0, 0.0), (-90.0, 0.0));
        assert!(
            (equator - half).abs() < 1e-6,
            "equator antipodes: {equator}"
        );
        assert!((poles - half).abs() < 1e-6, "polar antipodes: {poles}");
    }

    #[test]
    fn equator_to_pole_is_quarter_circumference() {
        let quarter = PI * EARTH_MEAN_RADIUS_KM / 2.0;
        let distance = great_circle_km((0.0, 0.0), (90.0, 0.0));
        assert!((distance - quarter).abs() < 1e-6, "got {distance}");
    }

    #[test]
    fn antimeridian_crossing_takes_short_way() {
        let distance = great_circle_km((0.0, 179.5), (0.0, -179.5));
        let one_degree = PI * EARTH_MEAN_RADIUS_KM / 180.0;
        assert!((distance - one_degree).abs() < 1e-6, "got {distance}");
    }

    #[test]
    fn nan_coordinate_gives_nan() {
        assert!(great_circle_km((f64::NAN, 0.0), (0.0, 0.0)).is_nan());
    }

    fn point() -> impl Strategy<Value = (f64, f64)> {
        (-90.0..=90.0f64, -180.0..=180.0f64)
    }

    proptest! {
        #[test]
        fn distance_is_symmetric(a in point(), b in point()) {
            let forward = great_circle_km(a, b);
            let backward = great_circle_km(b, a);
            prop_assert!((forward - backward).abs() < 1e-9, "{forward} != {backward}");
        }

        #[test]
        fn distance_to_self_is_zero(a in point()) {
            prop_assert!(great_circle_km(a, a).abs() < 1e-9);
        }

        #[test]
        fn distance_is_bounded_by_half_circumference(a in point(), b in point()) {
            let distance = great_circle_km(a, b);
            prop_assert!(distance >= 0.0);
            prop_assert!(distance <= PI * EARTH_MEAN_RADIUS_KM + 1e-6);
        }

        #[test]
        fn triangle_inequality_holds(a in point(), b in point(), c in point()) {
            let direct = great_circle_km(a, c);
            let via_b = great_circle_km(a, b) + great_circle_km(b, c);
            prop_assert!(direct <= via_b + 1e-6, "{direct} > {via_b}");
        }
    }
}
