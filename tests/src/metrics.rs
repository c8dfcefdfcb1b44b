//! Scraping `/metrics` over a plain TCP connection and reading the Prometheus text format.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::WAIT;

/// One sample of the text exposition format: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, with a `_bucket`, `_sum` or `_count` suffix for histograms.
    pub name: String,
    /// Labels by name.
    pub labels: BTreeMap<String, String>,
    /// Sample value.
    pub value: f64,
}

/// Fetches `http://{address}/metrics` and returns the body; panics on a status other than 200.
///
/// Sends an HTTP/1.0 request so the server answers with a plain body that ends when it closes
/// the connection, which needs no chunked decoding.
pub async fn scrape(address: SocketAddr) -> String {
    let fetch = async {
        let mut stream = TcpStream::connect(address).await?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(WAIT, fetch)
        .await
        .unwrap_or_else(|_| panic!("scraping `{address}` timed out after {WAIT:?}"))
        .unwrap_or_else(|err| panic!("failed to scrape `{address}`: {err}"));
    let response = String::from_utf8(response)
        .unwrap_or_else(|err| panic!("metrics response is not UTF-8: {err}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("metrics response has no header end: {response}"));
    let status_line = head.lines().next().unwrap_or_default();
    assert!(
        status_line.split_whitespace().nth(1) == Some("200"),
        "metrics endpoint returned `{status_line}`"
    );
    body.to_owned()
}

/// Parses the samples of a text exposition; comment and blank lines are skipped.
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("invalid exposition line `{line}`")))
        .collect()
}

/// Returns the value of the sample `name` whose labels include all of `labels`, if exactly one
/// matches; panics if several do.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{} samples of `{name}` match {labels:?}: {matching:?}",
        matching.len()
    );
    matching.first().map(|sample| sample.value)
}

/// Returns the sum of all samples named `name`, 0 if there are none.
pub fn sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .map(|sample| sample.value)
        .sum()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end + 1..])?
    } else {
        (BTreeMap::new(), &line[name_end..])
    };
    // An optional timestamp may follow the value.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `key="value",...}` and returns the labels and the text after the closing brace.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (index, '"') => break index,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, other) => value.push(other),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        text = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes() {
        let samples = parse_samples(
            "# HELP x_total Things.\n# TYPE x_total counter\n\
             x_total{kind=\"a\\\"b\",path=\"c\\\\d\"} 3\n",
        );
        let labels = &samples[0].labels;
        assert_eq!(labels["kind"], "a\"b");
        assert_eq!(labels["path"], "c\\d");
        assert_eq!(samples[0].value, 3.0);
    }

    #[test]
    fn parses_sample_without_labels_and_with_timestamp() {
        let samples = parse_samples("up 1 1700000000000\nlatency_bucket{le=\"+Inf\"} +Inf\n");
        assert_eq!(samples[0].name, "up");
        assert!(samples[0].labels.is_empty());
        assert_eq!(samples[1].value, f64::INFINITY);
    }

    #[test]
    fn value_matches_label_subset() {
        let samples =
            parse_samples("e{type=\"a\",outcome=\"x\"} 2\ne{type=\"b\",outcome=\"x\"} 5\n");
        assert_eq!(value(&samples, "e", &[("type", "b")]), Some(5.0));
        assert_eq!(value(&samples, "e", &[("type", "c")]), None);
        assert_eq!(sum(&samples, "e"), 7.0);
    }
}
