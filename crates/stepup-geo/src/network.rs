//! Network classification: special-purpose address blocks and a heuristic table of well-known
//! operators.
//!
//! Special-purpose blocks follow the IANA IPv4 and IPv6 special-purpose address registries
//! (RFC 6890 and its updates). The operator table is a heuristic: it matches autonomous system
//! numbers and words in the AS organization name, so it misses operators it does not list and
//! can misfile a network whose name happens to contain a listed word.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::NetworkClass::{
    self, Anonymous, Hosting, Mobile, Private, Reserved, Residential, Satellite,
};

/// IPv4 special-purpose blocks as `(network, prefix length, class)`.
const SPECIAL_V4: &[(Ipv4Addr, u8, NetworkClass)] = &[
    (Ipv4Addr::new(10, 0, 0, 0), 8, Private),
    (Ipv4Addr::new(172, 16, 0, 0), 12, Private),
    (Ipv4Addr::new(192, 168, 0, 0), 16, Private),
    (Ipv4Addr::new(127, 0, 0, 0), 8, Private), // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16, Private), // link-local
    (Ipv4Addr::new(100, 64, 0, 0), 10, Private), // carrier-grade NAT, RFC 6598
    (Ipv4Addr::new(0, 0, 0, 0), 8, Reserved),  // "this network", includes 0.0.0.0
    (Ipv4Addr::new(192, 0, 0, 0), 24, Reserved), // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24, Reserved), // TEST-NET-1 documentation
    (Ipv4Addr::new(198, 51, 100, 0), 24, Reserved), // TEST-NET-2 documentation
    (Ipv4Addr::new(203, 0, 113, 0), 24, Reserved), // TEST-NET-3 documentation
    (Ipv4Addr::new(198, 18, 0, 0), 15, Reserved), // benchmarking, RFC 2544
    (Ipv4Addr::new(224, 0, 0, 0), 4, Reserved), // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4, Reserved), // reserved, includes broadcast
];

/// IPv6 special-purpose blocks as `(network, prefix length, class)`, checked in order.
/// IPv4-mapped addresses never get here because [`canonical`] turns them into IPv4.
const SPECIAL_V6: &[(Ipv6Addr, u8, NetworkClass)] = &[
    (Ipv6Addr::LOCALHOST, 128, Private),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, Private), // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, Private), // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, Private), // deprecated site-local
    (
        Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0),
        32,
        Reserved,
    ), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, Reserved), // documentation, RFC 9637
    (
        Ipv6Addr::new(0x2001, 0x0002, 0, 0, 0, 0, 0, 0),
        48,
        Reserved,
    ), // benchmarking
];

/// IPv6 global unicast 2000::/3. The rest of the space not listed in [`SPECIAL_V6`] is
/// unspecified, multicast or unassigned.
const GLOBAL_UNICAST_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// NAT64 well-known prefix 64:ff9b::/96 (RFC 6052), whose last 32 bits are an IPv4 address.
const NAT64_PREFIX: [u16; 6] = [0x64, 0xff9b, 0, 0, 0, 0];

/// Built-in autonomous system numbers, sorted by number.
///
/// Checked against the organization names in the shipped `asn-ipv4.csv.gz` table. Numbers catch
/// networks whose registered name has no telling word, such as AS22394 (Verizon Wireless,
/// registered as "Verizon Business") or AS20057 (AT&T Mobility, "AT&T Enterprises, LLC").
const KNOWN_ASNS: &[(u32, NetworkClass)] = &[
    (6621, Satellite),   // Hughes Network Systems (HughesNet)
    (7155, Satellite),   // Viasat
    (8075, Hosting),     // Microsoft (Azure)
    (9009, Hosting),     // M247, which also carries many commercial VPN exits
    (12876, Hosting),    // Scaleway (Online SAS)
    (13335, Anonymous),  // Cloudflare: WARP and iCloud Private Relay egress
    (14061, Hosting),    // DigitalOcean
    (14593, Satellite),  // SpaceX Starlink
    (14618, Hosting),    // Amazon AWS
    (15169, Hosting),    // Google
    (16276, Hosting),    // OVH
    (16509, Hosting),    // Amazon AWS
    (20057, Mobile),     // AT&T Mobility
    (20473, Hosting),    // The Constant Company (Vultr, formerly Choopa)
    (21928, Mobile),     // T-Mobile USA
    (22184, Satellite),  // Iridium Satellite
    (22394, Mobile),     // Cellco Partnership (Verizon Wireless)
    (24940, Hosting),    // Hetzner Online
    (25222, Satellite),  // Inmarsat Solutions
    (31515, Satellite),  // Inmarsat Global
    (31898, Hosting),    // Oracle Cloud
    (37963, Hosting),    // Alibaba Cloud (Hangzhou Alibaba Advertising)
    (39351, Anonymous),  // 31173 Services (Mullvad VPN)
    (45090, Hosting),    // Tencent Cloud
    (45102, Hosting),    // Alibaba Cloud (US)
    (47583, Hosting),    // Hostinger
    (51167, Hosting),    // Contabo
    (60068, Anonymous),  // Datacamp (CDN77), which hosts many VPN exits
    (60781, Hosting),    // Leaseweb Netherlands
    (63949, Hosting),    // Akamai Connected Cloud (Linode)
    (132203, Hosting),   // Tencent Cloud
    (136787, Anonymous), // PacketHub, formerly Tefincom (NordVPN)
    (207137, Anonymous), // PacketHub (NordVPN)
    (212238, Anonymous), // Datacamp (CDN77)
    (396982, Hosting),   // Google Cloud
    (398736, Satellite), // Iridium Satellite
];

/// Words matched in AS organization names, case-insensitively and on word boundaries. The first
/// match wins, so exceptions come before the general words they contain. A trailing `*` also
/// matches longer words (`movil*` matches "Moviles" and "MOVILNET").
///
/// NOTE: `wireless` also matches fixed-wireless home ISPs, which are classed as mobile.
const ORG_WORDS: &[(&str, NetworkClass)] = &[
    // Exceptions: incumbent fixed-line carriers and a home ISP.
    ("cable & wireless", Residential),
    ("google fiber", Residential),
    // VPN operators and anonymizing relays.
    ("packethub", Anonymous),
    ("tefincom", Anonymous),
    ("nordvpn", Anonymous),
    ("datacamp", Anonymous),
    ("cdn77", Anonymous),
    ("31173 services", Anonymous),
    ("mullvad", Anonymous),
    ("proton ag", Anonymous),
    ("windscribe", Anonymous),
    ("private internet access", Anonymous),
    ("london trust media", Anonymous),
    ("expressvpn", Anonymous),
    ("surfshark", Anonymous),
    ("cyberghost", Anonymous),
    ("ipvanish", Anonymous),
    ("torguard", Anonymous),
    ("cloudflare", Anonymous),
    // Cloud and hosting providers.
    ("amazon", Hosting),
    ("aws", Hosting),
    ("google", Hosting),
    ("microsoft", Hosting),
    ("digitalocean", Hosting),
    ("ovh", Hosting),
    ("ovhcloud", Hosting),
    ("hetzner", Hosting),
    ("linode", Hosting),
    ("akamai", Hosting),
    ("vultr", Hosting),
    ("choopa", Hosting),
    ("the constant company", Hosting),
    ("alibaba", Hosting),
    ("aliyun", Hosting),
    ("tencent", Hosting),
    ("oracle", Hosting),
    ("contabo", Hosting),
    ("leaseweb", Hosting),
    ("scaleway", Hosting),
    ("online s.a.s", Hosting),
    ("m247", Hosting),
    ("hostinger", Hosting),
    ("ionos", Hosting),
    ("godaddy", Hosting),
    ("rackspace", Hosting),
    ("softlayer", Hosting),
    ("ibm cloud", Hosting),
    ("upcloud", Hosting),
    ("kamatera", Hosting),
    ("psychz", Hosting),
    ("quadranet", Hosting),
    ("colocrossing", Hosting),
    ("servers.com", Hosting),
    ("worldstream", Hosting),
    ("g-core", Hosting),
    ("gcore", Hosting),
    ("zenlayer", Hosting),
    ("selectel", Hosting),
    ("timeweb", Hosting),
    ("hostkey", Hosting),
    ("aeza", Hosting),
    ("frantech", Hosting),
    ("fastly", Hosting),
    ("hosting", Hosting),
    ("datacenter", Hosting),
    ("data center", Hosting),
    ("colocation", Hosting),
    // Satellite internet providers.
    ("spacex", Satellite),
    ("space exploration technologies", Satellite),
    ("viasat", Satellite),
    ("hughes network", Satellite),
    ("hughesnet", Satellite),
    ("inmarsat", Satellite),
    ("iridium satellite", Satellite),
    ("eutelsat", Satellite),
    ("oneweb", Satellite),
    ("marlink", Satellite),
    ("speedcast", Satellite),
    // Mobile carriers.
    ("mobile", Mobile),
    ("wireless", Mobile),
    ("cellular", Mobile),
    ("cellco", Mobile),
    ("at&t mobility", Mobile),
    ("att-mobility", Mobile),
    ("movil*", Mobile),
    ("móvil*", Mobile),
    ("movel", Mobile),
];

/// Returns the address with IPv4-mapped and NAT64 IPv6 forms turned into plain IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let segments = v6.segments();
            if segments[..6] == NAT64_PREFIX {
                let bits = u128::from(v6) as u32;
                return IpAddr::V4(Ipv4Addr::from(bits));
            }
            ip
        }
    }
}

/// Returns `Private` or `Reserved` for an address in a special-purpose block, and `None` for a
/// global address. Expects an address from [`canonical`].
pub(crate) fn special_purpose(ip: IpAddr) -> Option<NetworkClass> {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            SPECIAL_V4
                .iter()
                .find(|(network, len, _)| prefix_matches_v4(bits, u32::from(*network), *len))
                .map(|(_, _, class)| *class)
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let listed = SPECIAL_V6
                .iter()
                .find(|(network, len, _)| prefix_matches_v6(bits, u128::from(*network), *len))
                .map(|(_, _, class)| *class);
            let (global, global_len) = GLOBAL_UNICAST_V6;
            let is_global = prefix_matches_v6(bits, u128::from(global), global_len);
            listed.or((!is_global).then_some(Reserved))
        }
    }
}

fn prefix_matches_v4(bits: u32, network: u32, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    bits & mask == network
}

fn prefix_matches_v6(bits: u128, network: u128, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    bits & mask == network
}

/// Returns the class that the built-in table gives an autonomous system, if any.
///
/// The number is checked first, then the words of the organization name.
pub(crate) fn classify_asn(number: u32, organization: Option<&str>) -> Option<NetworkClass> {
    classify_known_asn(number).or_else(|| organization.and_then(classify_organization))
}

/// Returns the class of an AS number listed in [`KNOWN_ASNS`].
pub(crate) fn classify_known_asn(number: u32) -> Option<NetworkClass> {
    KNOWN_ASNS
        .binary_search_by_key(&number, |(asn, _)| *asn)
        .ok()
        .map(|index| KNOWN_ASNS[index].1)
}

/// Returns the class of the first [`ORG_WORDS`] entry found in an organization name.
pub(crate) fn classify_organization(organization: &str) -> Option<NetworkClass> {
    let lower = organization.to_lowercase();
    let text = lower.as_bytes();
    let word_starts: Vec<usize> = (0..text.len())
        .filter(|&index| {
            is_word_byte(text[index]) && (index == 0 || !is_word_byte(text[index - 1]))
        })
        .collect();

    ORG_WORDS
        .iter()
        .find(|(pattern, _)| {
            word_starts
                .iter()
                .any(|&start| matches_word_at(text, start, pattern))
        })
        .map(|(_, class)| *class)
}

/// Word characters are ASCII letters and digits and all non-ASCII bytes, so a pattern never
/// matches inside a word with accented letters.
fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || !byte.is_ascii()
}

/// Returns true when `pattern` occurs at `start` and, unless it ends in `*`, ends a word there.
fn matches_word_at(text: &[u8], start: usize, pattern: &str) -> bool {
    let (pattern, whole_word) = match pattern.strip_suffix('*') {
        Some(prefix) => (prefix.as_bytes(), false),
        None => (pattern.as_bytes(), true),
    };
    text[start..].starts_with(pattern)
        && (!whole_word
            || text
                .get(start + pattern.len())
                .is_none_or(|&byte| !is_word_byte(byte)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(address: &str) -> Option<NetworkClass> {
        special_purpose(canonical(address.parse().unwrap()))
    }

    #[test]
    fn private_ipv4_blocks_are_private() {
        for address in [
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.10.20",
            "100.64.0.1",
            "100.127.255.255",
        ] {
            assert_eq!(class_of(address), Some(Private), "{address}");
        }
    }

    #[test]
    fn reserved_ipv4_blocks_are_reserved() {
        for address in [
            "0.0.0.0",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.200",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.251",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert_eq!(class_of(address), Some(Reserved), "{address}");
        }
    }

    #[test]
    fn block_edges_are_global() {
        for address in [
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "1.1.1.1",
        ] {
            assert_eq!(class_of(address), None, "{address}");
        }
    }

    #[test]
    fn private_ipv6_blocks_are_private() {
        for address in [
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
        ] {
            assert_eq!(class_of(address), Some(Private), "{address}");
        }
    }

    #[test]
    fn reserved_ipv6_blocks_are_reserved() {
        for address in [
            "::",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "100::1",
            "::2",
        ] {
            assert_eq!(class_of(address), Some(Reserved), "{address}");
        }
    }

    #[test]
    fn mapped_ipv4_is_classified_as_ipv4() {
        assert_eq!(class_of("::ffff:192.168.0.1"), Some(Private));
        assert_eq!(class_of("::ffff:192.0.2.1"), Some(Reserved));
        assert_eq!(class_of("::ffff:8.8.8.8"), None);
        assert_eq!(
            canonical("::ffff:8.8.8.8".parse().unwrap()),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn nat64_address_is_classified_as_embedded_ipv4() {
        assert_eq!(
            canonical("64:ff9b::808:808".parse().unwrap()),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(class_of("64:ff9b::a00:1"), Some(Private));
    }

    #[test]
    fn global_ipv6_is_not_special() {
        assert_eq!(class_of("2001:4860:4860::8888"), None);
        assert_eq!(class_of("2a00:1450::1"), None);
    }

    #[test]
    fn known_asns_are_sorted_and_unique() {
        assert!(KNOWN_ASNS.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }

    #[test]
    fn known_asn_overrides_organization_name() {
        assert_eq!(classify_asn(22394, Some("Verizon Business")), Some(Mobile));
        assert_eq!(classify_asn(14593, None), Some(Satellite));
        assert_eq!(classify_asn(64_512, None), None);
    }

    #[test]
    fn organization_words_classify_operators() {
        let cases = [
            ("Amazon.com, Inc.", Some(Hosting)),
            ("AMAZON-02", Some(Hosting)),
            ("Hetzner Online GmbH", Some(Hosting)),
            ("GOOGLE-CLOUD-PLATFORM", Some(Hosting)),
            ("PacketHub S.A.", Some(Anonymous)),
            ("Datacamp Limited", Some(Anonymous)),
            ("SpaceX Services, Inc.", Some(Satellite)),
            ("ViaSat,Inc.", Some(Satellite)),
            ("T-Mobile USA, Inc.", Some(Mobile)),
            ("China Mobile Communications Corporation", Some(Mobile)),
            ("Telefonica Moviles Argentina S.A.", Some(Mobile)),
            ("Telefónica Móviles España", Some(Mobile)),
            ("Google Fiber Inc.", Some(Residential)),
            ("Cable & Wireless Jamaica", Some(Residential)),
            ("Telstra Limited", None),
        ];
        for (organization, expected) in cases {
            assert_eq!(
                classify_organization(organization),
                expected,
                "{organization}"
            );
        }
    }

    #[test]
    fn words_inside_longer_words_do_not_match() {
        assert_eq!(
            classify_organization("AMAZONIA TELECOMUNICACOES LTDA"),
            None
        );
        assert_eq!(classify_organization("Datacampus SAS"), None);
        assert_eq!(classify_organization("Viridium.cz s.r.o."), None);
        assert_eq!(classify_organization("Cellcom Guinea"), None);
        assert_eq!(classify_organization("Baker Hughes Incorporated"), None);
    }

    #[test]
    fn organization_words_are_lowercase() {
        for (pattern, _) in ORG_WORDS {
            assert_eq!(
                *pattern,
                pattern.to_lowercase(),
                "patterns are matched on lowercased names"
            );
        }
    }
}
