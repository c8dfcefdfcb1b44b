//! ASN lookups in a CSV table of address ranges.
//!
//! The table has one `start_ip,end_ip,asn,org` row per line, no header, fields quoted as in
//! RFC 4180 where they contain commas or quotes, IPv4 or IPv6 addresses and inclusive ends.
//! Rows with AS number 0 mark unrouted space and are skipped. A malformed row fails the whole
//! load, because skipping it would silently lose coverage of a table that is meant to be
//! complete.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use crate::network::{canonical, classify_known_asn, classify_organization};
use crate::{GeoError, NetworkClass};

/// Index value for a row without an organization name.
const NO_ORGANIZATION: u32 = u32::MAX;

/// ASN facts found for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AsnHit<'a> {
    pub(crate) number: u32,
    pub(crate) organization: Option<&'a str>,
    /// Class from the built-in operator table, if it lists this network.
    pub(crate) class: Option<NetworkClass>,
}

/// Disjoint address ranges, sorted by start, with interned organization names.
pub(crate) struct AsnTable {
    v4: Vec<Range<u32>>,
    v6: Vec<Range<u128>>,
    organizations: Vec<Box<str>>,
    /// Class from [`classify_organization`] for each entry of `organizations`.
    organization_classes: Vec<Option<NetworkClass>>,
    stats: LoadStats,
}

/// Inclusive address range of one AS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range<A> {
    start: A,
    end: A,
    asn: u32,
    organization: u32,
}

/// Address as an integer, for ranges of either IP version.
trait Bound: Copy + Ord {
    const MIN: Self;
    fn successor(self) -> Option<Self>;
    fn predecessor(self) -> Option<Self>;
}

/// Row counts from loading a table, for the startup log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LoadStats {
    /// Non-empty lines.
    pub(crate) rows: usize,
    /// Rows with AS number 0, which were skipped.
    pub(crate) unrouted: usize,
    /// Rows that overlapped an earlier row.
    pub(crate) overlapping: usize,
}

// === impl AsnTable ===

impl AsnTable {
    /// Parses a whole table read from `path`.
    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<AsnTable, GeoError> {
        let mut builder = Builder::default();
        let mut stats = LoadStats::default();

        for (index, line) in bytes.split(|byte| *byte == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let row_error = |reason: String| GeoError::AsnRow {
                path: path.to_path_buf(),
                line: index + 1,
                reason,
            };
            let row = parse_row(line).map_err(row_error)?;
            stats.rows += 1;
            match row {
                Some(row) => builder.push(row),
                None => stats.unrouted += 1,
            }
        }

        Ok(builder.finish(stats))
    }

    /// Returns the AS announcing `ip`, if a row covers it. Expects an address from
    /// [`canonical`].
    pub(crate) fn lookup(&self, ip: IpAddr) -> Option<AsnHit<'_>> {
        let (asn, organization) = match ip {
            IpAddr::V4(v4) => find(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => find(&self.v6, u128::from(v6)),
        }?;

        let index = organization as usize;
        let organization = self.organizations.get(index).map(|name| &**name);
        let organization_class = self.organization_classes.get(index).copied().flatten();
        Some(AsnHit {
            number: asn,
            organization,
            class: classify_known_asn(asn).or(organization_class),
        })
    }

    /// Returns the number of disjoint ranges in the table.
    pub(crate) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Returns the number of distinct organization names.
    pub(crate) fn organization_count(&self) -> usize {
        self.organizations.len()
    }

    /// Returns the row counts from loading the table.
    pub(crate) fn stats(&self) -> LoadStats {
        self.stats
    }
}

impl fmt::Debug for AsnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsnTable")
            .field("v4_ranges", &self.v4.len())
            .field("v6_ranges", &self.v6.len())
            .field("organizations", &self.organizations.len())
            .finish()
    }
}

/// Returns the AS number and organization index of the range holding `ip`.
fn find<A: Bound>(ranges: &[Range<A>], ip: A) -> Option<(u32, u32)> {
    let after = ranges.partition_point(|range| range.start <= ip);
    let range = ranges.get(after.checked_sub(1)?)?;
    (ip <= range.end).then_some((range.asn, range.organization))
}

// === impl Builder ===

/// One valid row: address range, AS number and organization name.
struct Row<'a> {
    start: IpAddr,
    end: IpAddr,
    asn: u32,
    organization: Option<Cow<'a, str>>,
}

/// Collects rows and interns organization names.
#[derive(Default)]
struct Builder<'a> {
    v4: Vec<Range<u32>>,
    v6: Vec<Range<u128>>,
    interned: HashMap<Cow<'a, str>, u32>,
    organizations: Vec<Box<str>>,
}

impl<'a> Builder<'a> {
    fn push(&mut self, row: Row<'a>) {
        let organization = row
            .organization
            .map_or(NO_ORGANIZATION, |name| self.intern(name));
        match (row.start, row.end) {
            (IpAddr::V4(start), IpAddr::V4(end)) => self.v4.push(Range {
                start: u32::from(start),
                end: u32::from(end),
                asn: row.asn,
                organization,
            }),
            (IpAddr::V6(start), IpAddr::V6(end)) => self.v6.push(Range {
                start: u128::from(start),
                end: u128::from(end),
                asn: row.asn,
                organization,
            }),
            // `parse_row` rejects rows that mix IP versions.
            _ => {}
        }
    }

    fn intern(&mut self, name: Cow<'a, str>) -> u32 {
        if let Some(index) = self.interned.get(&name) {
            return *index;
        }
        // More than u32::MAX - 1 names would take tens of GiB, so the fallback is unreachable.
        let index = u32::try_from(self.organizations.len()).unwrap_or(NO_ORGANIZATION);
        self.organizations.push(Box::from(&*name));
        self.interned.insert(name, index);
        index
    }

    /// Returns the finished table, with the count of overlapping rows added to `stats`.
    fn finish(self, mut stats: LoadStats) -> AsnTable {
        let (v4, overlapping_v4) = flatten(self.v4);
        let (v6, overlapping_v6) = flatten(self.v6);
        stats.overlapping = overlapping_v4 + overlapping_v6;
        let organization_classes = self
            .organizations
            .iter()
            .map(|name| classify_organization(name))
            .collect();
        AsnTable {
            v4,
            v6,
            organizations: self.organizations,
            organization_classes,
            stats,
        }
    }
}

/// Rewrites ranges into disjoint ones sorted by start, and counts the rows that overlapped.
///
/// Where ranges overlap, the one that starts later wins because it is the more specific
/// announcement, and an enclosing range resumes after it ends. Among ranges with the same
/// start the shorter wins, and among identical ranges the later row.
fn flatten<A: Bound>(mut ranges: Vec<Range<A>>) -> (Vec<Range<A>>, usize) {
    ranges.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));

    let mut flat = Vec::with_capacity(ranges.len());
    let mut open: Vec<Range<A>> = Vec::new();
    let mut next_free = Some(A::MIN);
    let mut overlapping = 0;
    for range in ranges {
        emit_open(&mut flat, &mut open, &mut next_free, Some(range.start));
        if !open.is_empty() {
            overlapping += 1;
        }
        open.push(range);
    }
    emit_open(&mut flat, &mut open, &mut next_free, None);
    (flat, overlapping)
}

/// Emits the parts of the open ranges, innermost first, that lie before `limit` (or all of
/// them when `limit` is `None`), and drops the ranges that end there. `next_free` is the first
/// address not yet emitted, or `None` once the top of the address space is emitted.
fn emit_open<A: Bound>(
    flat: &mut Vec<Range<A>>,
    open: &mut Vec<Range<A>>,
    next_free: &mut Option<A>,
    limit: Option<A>,
) {
    while let Some(top) = open.last().copied() {
        let Some(from) = next_free.map(|free| free.max(top.start)) else {
            open.clear();
            return;
        };
        if top.end < from {
            open.pop();
            continue;
        }
        let stops_at_limit = limit.is_some_and(|limit| limit <= top.end);
        let to = match limit.filter(|_| stops_at_limit).map(Bound::predecessor) {
            Some(Some(before_limit)) if before_limit >= from => before_limit,
            Some(_) => return,
            None => top.end,
        };
        flat.push(Range {
            start: from,
            end: to,
            ..top
        });
        *next_free = to.successor();
        if stops_at_limit {
            return;
        }
        open.pop();
    }
}

// === impl Bound ===

impl Bound for u32 {
    const MIN: u32 = 0;

    fn successor(self) -> Option<u32> {
        self.checked_add(1)
    }

    fn predecessor(self) -> Option<u32> {
        self.checked_sub(1)
    }
}

impl Bound for u128 {
    const MIN: u128 = 0;

    fn successor(self) -> Option<u128> {
        self.checked_add(1)
    }

    fn predecessor(self) -> Option<u128> {
        self.checked_sub(1)
    }
}

// === row parsing ===

/// Parses one line, returning `None` for an unrouted (AS 0) row.
fn parse_row(line: &[u8]) -> Result<Option<Row<'_>>, String> {
    let line = std::str::from_utf8(line).map_err(|_| "the line is not valid UTF-8".to_owned())?;
    let fields = split_fields(line)?;
    let [start, end, asn, organization] = <[Cow<'_, str>; 4]>::try_from(fields)
        .map_err(|fields| format!("expected 4 fields, found {}", fields.len()))?;

    let start = parse_address(&start, "start")?;
    let end = parse_address(&end, "end")?;
    if start.is_ipv4() != end.is_ipv4() {
        return Err(format!(
            "start `{start}` and end `{end}` are of different IP versions"
        ));
    }
    if start > end {
        return Err(format!("start `{start}` is after end `{end}`"));
    }
    let asn = asn.trim();
    let asn = asn
        .strip_prefix("AS")
        .unwrap_or(asn)
        .parse::<u32>()
        .map_err(|_| format!("invalid AS number `{asn}`"))?;
    if asn == 0 {
        return Ok(None);
    }

    let organization = match organization {
        Cow::Borrowed(name) => Some(Cow::Borrowed(name.trim())),
        Cow::Owned(name) => Some(Cow::Owned(name.trim().to_owned())),
    }
    .filter(|name| !name.is_empty());
    Ok(Some(Row {
        start,
        end,
        asn,
        organization,
    }))
}

fn parse_address(field: &str, field_name: &str) -> Result<IpAddr, String> {
    let field = field.trim();
    field
        .parse::<IpAddr>()
        .map(canonical)
        .map_err(|_| format!("invalid {field_name} address `{field}`"))
}

/// Splits a CSV line into fields, unquoting quoted fields and their doubled quotes.
fn split_fields(line: &str) -> Result<Vec<Cow<'_, str>>, String> {
    let mut fields = Vec::with_capacity(4);
    let mut rest = line;
    loop {
        let (field, after) = match rest.strip_prefix('"') {
            Some(quoted) => split_quoted(quoted)?,
            None => match rest.split_once(',') {
                Some((field, after)) => (Cow::Borrowed(field), Some(after)),
                None => (Cow::Borrowed(rest), None),
            },
        };
        fields.push(field);
        match after {
            Some(after) => rest = after,
            None => return Ok(fields),
        }
    }
}

/// Splits off a quoted field, given the text after its opening quote. Returns the unquoted
/// field and the text after the following comma, or `None` at the end of the line.
fn split_quoted(text: &str) -> Result<(Cow<'_, str>, Option<&str>), String> {
    let mut value: Option<String> = None;
    let mut from = 0;
    loop {
        let close = text[from..]
            .find('"')
            .map(|offset| from + offset)
            .ok_or_else(|| "a quoted field has no closing quote".to_owned())?;
        let after = &text[close + 1..];
        if let Some(rest) = after.strip_prefix('"') {
            // A doubled quote is a literal quote inside the field.
            value
                .get_or_insert_with(String::new)
                .push_str(&text[from..=close]);
            from = text.len() - rest.len();
            continue;
        }
        let field = match value {
            Some(mut owned) => {
                owned.push_str(&text[from..close]);
                Cow::Owned(owned)
            }
            None => Cow::Borrowed(&text[..close]),
        };
        return match after.strip_prefix(',') {
            Some(rest) => Ok((field, Some(rest))),
            None if after.trim().is_empty() => Ok((field, None)),
            None => Err("unexpected text after a closing quote".to_owned()),
        };
    }
}

#[cfg(test)]
mod tests;
