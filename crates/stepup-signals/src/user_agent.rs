//! User-agent family parsing with woothee.

use std::sync::LazyLock;

use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use woothee::parser::Parser;

/// Value used for any family woothee cannot name.
pub const UNKNOWN: &str = "unknown";

/// Category given to scripted HTTP clients, the same one woothee gives to bots.
const CRAWLER: &str = "crawler";

/// Prefixes of scripted HTTP clients that woothee 0.13 does not name at all.
const SCRIPTED_CLIENT_PREFIXES: [&str; 9] = [
    "python-requests/",
    "python-httpx/",
    "python-urllib3/",
    "aiohttp/",
    "Go-http-client/",
    "okhttp/",
    "axios/",
    "node-fetch/",
    "PostmanRuntime/",
];

/// Maximum number of distinct user agents whose parsed families are kept.
const PARSED_CACHE_ENTRIES: usize = 4096;

/// Maximum length, in bytes, of a cached user agent. Browsers typically send 100 to 300
/// bytes. Longer strings are parsed every time, which bounds the cache's memory to about 2 MB.
const MAX_CACHED_UA_BYTES: usize = 512;

/// Recently parsed user agents. Parsing is a pure function of the string, so a cached result
/// equals a fresh one.
static PARSED: LazyLock<Cache<String, UserAgentInfo>> =
    LazyLock::new(|| Cache::new(PARSED_CACHE_ENTRIES));

/// Browser, OS and device category of a user agent, as family names without versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAgentInfo {
    /// Browser family, for example `Chrome`, `Safari` or `Firefox`; `unknown` if not recognised.
    pub browser: String,
    /// OS family, for example `Windows`, `macOS`, `iOS`, `Android` or `Linux`.
    pub os: String,
    /// Woothee device category: `pc`, `smartphone`, `mobilephone`, `appliance`, `crawler`,
    /// `misc` or `unknown`.
    pub category: String,
}

/// Parses a raw `User-Agent` header into family names.
///
/// Scripted HTTP clients (curl, wget, python-requests and the like) get browser and OS
/// `unknown` and category `crawler`. For risk they are automation, and the operator of the
/// script can set the client name to anything.
///
/// Results of recently seen strings up to 512 bytes come from a process-wide bounded cache.
pub fn parse_user_agent(ua: &str) -> UserAgentInfo {
    if ua.len() > MAX_CACHED_UA_BYTES {
        return parse_uncached(ua);
    }
    if let Some(info) = PARSED.get(ua) {
        return info;
    }
    let info = parse_uncached(ua);
    PARSED.insert(ua.to_owned(), info.clone());
    info
}

fn parse_uncached(ua: &str) -> UserAgentInfo {
    let parsed = Parser::new().parse(ua);
    let is_http_library = parsed
        .as_ref()
        .is_some_and(|result| result.name == "HTTP Library");
    if is_http_library || is_scripted_client(ua) {
        return UserAgentInfo {
            browser: UNKNOWN.to_owned(),
            os: UNKNOWN.to_owned(),
            category: CRAWLER.to_owned(),
        };
    }
    match parsed {
        Some(result) => UserAgentInfo {
            browser: known_or_unknown(result.name).to_owned(),
            os: os_family(result.os).to_owned(),
            category: known_or_unknown(result.category).to_owned(),
        },
        None => UserAgentInfo {
            browser: UNKNOWN.to_owned(),
            os: UNKNOWN.to_owned(),
            category: UNKNOWN.to_owned(),
        },
    }
}

fn is_scripted_client(ua: &str) -> bool {
    SCRIPTED_CLIENT_PREFIXES
        .iter()
        .any(|prefix| ua.starts_with(prefix))
}

fn known_or_unknown(value: &str) -> &str {
    if value.is_empty() || value == woothee::woothee::VALUE_UNKNOWN {
        UNKNOWN
    } else {
        value
    }
}

/// Maps a woothee OS name, which may carry a version (`Windows 10`), to its family.
fn os_family(os: &str) -> &str {
    match known_or_unknown(os) {
        "Windows Phone OS" => "Windows Phone",
        name if name.starts_with("Windows") => "Windows",
        "Mac OSX" => "macOS",
        "iPhone" | "iPad" | "iPod" | "iOS" => "iOS",
        "BlackBerry 10" => "BlackBerry",
        name => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    const SAFARI_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15";
    const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/126.0.6478.71 Mobile Safari/537.36";
    const EDGE_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.68";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    fn info(browser: &str, os: &str, category: &str) -> UserAgentInfo {
        UserAgentInfo {
            browser: browser.into(),
            os: os.into(),
            category: category.into(),
        }
    }

    #[test]
    fn parses_real_browser_families() {
        let cases = [
            (CHROME_WINDOWS, info("Chrome", "Windows", "pc")),
            (SAFARI_IPHONE, info("Safari", "iOS", "smartphone")),
            (FIREFOX_LINUX, info("Firefox", "Linux", "pc")),
            (SAFARI_MAC, info("Safari", "macOS", "pc")),
            (CHROME_ANDROID, info("Chrome", "Android", "smartphone")),
            (EDGE_WINDOWS, info("Edge", "Windows", "pc")),
            (GOOGLEBOT, info("Googlebot", "unknown", "crawler")),
        ];
        for (ua, expected) in cases {
            assert_eq!(parse_user_agent(ua), expected, "{ua}");
        }
    }

    #[test]
    fn scripted_clients_are_crawlers() {
        let cases = [
            "curl/8.5.0",
            "Wget/1.21.4",
            "python-requests/2.32.3",
            "Python-urllib/3.11",
            "Go-http-client/1.1",
            "okhttp/4.12.0",
        ];
        for ua in cases {
            assert_eq!(
                parse_user_agent(ua),
                info("unknown", "unknown", "crawler"),
                "{ua}"
            );
        }
    }

    #[test]
    fn cached_parse_equals_fresh_parse() {
        for ua in [CHROME_WINDOWS, SAFARI_IPHONE, GOOGLEBOT, "curl/8.5.0", ""] {
            let fresh = parse_uncached(ua);

            assert_eq!(parse_user_agent(ua), fresh, "{ua}, first parse");
            assert_eq!(parse_user_agent(ua), fresh, "{ua}, cached parse");
        }
    }

    #[test]
    fn long_user_agent_is_not_cached() {
        let long = format!("{CHROME_WINDOWS} {}", "x".repeat(MAX_CACHED_UA_BYTES));

        assert_eq!(parse_user_agent(&long), parse_uncached(&long));
        assert!(PARSED.get(long.as_str()).is_none());
    }

    #[test]
    fn empty_or_garbage_is_unknown() {
        for ua in ["", "-", "definitely not a browser"] {
            assert_eq!(
                parse_user_agent(ua),
                info("unknown", "unknown", "unknown"),
                "{ua:?}"
            );
        }
    }
}
