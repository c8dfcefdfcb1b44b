//! `report.html`: one self-contained page (inline CSS and SVG, no scripts or external files)
//! with the summary's charts and tables.

use std::collections::BTreeSet;
use std::fmt::Write;

use chrono::DateTime;

use crate::summary::{DiffSummary, Group, RuleSetSummary, Summary};
use crate::svg::{self, Bar, Line, Segment, escape};

/// Colors of the candidate and baseline lines.
const CANDIDATE_COLOR: &str = "#1f77b4";
const BASELINE_COLOR: &str = "#ff7f0e";

/// Colors of the allow, mfa and deny segments.
const REQUIREMENT_SEGMENTS: [Segment<'static>; 3] = [
    Segment {
        name: "allow",
        color: "#59a14f",
    },
    Segment {
        name: "mfa",
        color: "#f28e2b",
    },
    Segment {
        name: "deny",
        color: "#e15759",
    },
];

/// Bars drawn in the decisions-per-rule chart; the table lists every rule.
const MAX_RULE_BARS: usize = 30;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}\
th{background:#f3f3f3}td.n{text-align:right}h2{margin-top:1.6em}\
code{font-size:12px}";

/// Renders the report page.
pub(crate) fn render(summary: &Summary) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>stepup backtest</title><style>{STYLE}</style></head><body>\n\
         <h1>stepup backtest</h1>\n"
    );
    input_section(&mut html, summary);
    rule_sets_section(&mut html, summary);
    rate_section(&mut html, summary);
    rules_section(&mut html, summary);
    if let Some(diff) = &summary.diff {
        diff_section(&mut html, diff);
    }
    breakdown_section(&mut html, &summary.candidate);
    invalid_section(&mut html, summary);
    html.push_str("</body></html>\n");
    html
}

fn input_section(html: &mut String, summary: &Summary) {
    let input = &summary.input;
    let rows = [
        ("file", escape(&input.path)),
        ("format", input.format.as_str().to_owned()),
        ("events", input.events.to_string()),
        ("invalid records", input.invalid.to_string()),
        (
            "first event",
            escape(input.first_event_at.as_deref().unwrap_or("-")),
        ),
        (
            "last event",
            escape(input.last_event_at.as_deref().unwrap_or("-")),
        ),
        ("sorted in memory", input.sorted.to_string()),
    ];
    html.push_str("<h2>Input</h2><table>");
    for (name, value) in rows {
        let _ = write!(html, "<tr><th>{name}</th><td>{value}</td></tr>");
    }
    html.push_str("</table>\n");
}

fn rule_sets_section(html: &mut String, summary: &Summary) {
    html.push_str(
        "<h2>Rule sets</h2><table><tr><th>rule set</th><th>directory</th><th>version</th>\
         <th>rules</th><th>decisions</th><th>allow</th><th>mfa</th><th>deny</th>\
         <th>step-up rate</th></tr>",
    );
    for set in rule_sets(summary) {
        let counts = &set.requirements;
        let _ = write!(
            html,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&set.name),
            escape(&set.rules_dir),
            escape(&set.rule_set_version),
            set.rules.len(),
            set.decisions,
            counts.allow,
            counts.mfa,
            counts.deny,
            percent(set.step_up_rate)
        );
    }
    html.push_str("</table>\n");
}

fn rule_sets(summary: &Summary) -> impl Iterator<Item = &RuleSetSummary> {
    std::iter::once(&summary.candidate).chain(summary.baseline.as_ref())
}

fn rate_section(html: &mut String, summary: &Summary) {
    let _ = write!(
        html,
        "<h2>Step-up rate per {}</h2><p>Share of decisions that asked for MFA or denied.</p>",
        summary.bucket.as_str()
    );
    let mut lines = vec![rate_line(&summary.candidate, CANDIDATE_COLOR)];
    if let Some(baseline) = &summary.baseline {
        lines.push(rate_line(baseline, BASELINE_COLOR));
    }
    let title = format!("step-up rate per {}", summary.bucket.as_str());
    html.push_str(&svg::line_chart(
        &title,
        &lines,
        &time_labels(&summary.candidate),
    ));
    html.push('\n');
}

fn rate_line<'a>(set: &'a RuleSetSummary, color: &'a str) -> Line<'a> {
    let points = set
        .over_time
        .iter()
        .filter_map(|bucket| Some((bucket_seconds(&bucket.start)?, bucket.step_up_rate)))
        .collect();
    Line {
        name: &set.name,
        color,
        points,
    }
}

fn bucket_seconds(start: &str) -> Option<f64> {
    DateTime::parse_from_rfc3339(start)
        .ok()
        .map(|at| at.timestamp() as f64)
}

/// Labels the first, middle and last bucket with their dates.
fn time_labels(set: &RuleSetSummary) -> Vec<(f64, String)> {
    let buckets = &set.over_time;
    let picks: BTreeSet<usize> = match buckets.len() {
        0 => BTreeSet::new(),
        len => [0, len / 2, len - 1].into_iter().collect(),
    };
    picks
        .into_iter()
        .filter_map(|index| {
            let start = &buckets[index].start;
            let label = start.trim_end_matches(":00:00Z").replace('T', " ");
            Some((bucket_seconds(start)?, label))
        })
        .collect()
}

fn rules_section(html: &mut String, summary: &Summary) {
    html.push_str(
        "<h2>Decisions per rule</h2><p>A decision with several deciding rules counts for each. \
         <code>(none)</code> is an allow that no rule gave an opinion on; \
         <code>engine:&lt;code&gt;</code> is a decision the engine made without a rule.</p>",
    );
    let mut bars = Vec::new();
    let mut keys: Vec<&str> = Vec::new();
    for set in rule_sets(summary) {
        for group in &set.by_rule {
            if !keys.contains(&group.key.as_str()) {
                keys.push(&group.key);
            }
        }
    }
    for key in keys.iter().take(MAX_RULE_BARS) {
        for set in rule_sets(summary) {
            let Some(group) = set.by_rule.iter().find(|group| group.key == *key) else {
                continue;
            };
            let label = match summary.baseline {
                Some(_) => format!("{key} ({})", set.name),
                None => (*key).to_owned(),
            };
            let counts = &group.counts;
            bars.push(Bar {
                label,
                values: vec![counts.allow, counts.mfa, counts.deny],
            });
        }
    }
    html.push_str(&svg::stacked_bars(
        "decisions per rule",
        &REQUIREMENT_SEGMENTS,
        &bars,
    ));
    html.push('\n');
    for set in rule_sets(summary) {
        group_table(html, &format!("{} by rule", set.name), &set.by_rule);
    }
}

fn diff_section(html: &mut String, diff: &DiffSummary) {
    let _ = write!(
        html,
        "<h2>Changes from baseline to candidate</h2><p>{} of {} decided events changed \
         ({}).</p><table><tr><th>change</th><th>events</th></tr>",
        diff.changed,
        diff.compared,
        percent(ratio(diff.changed, diff.compared))
    );
    for (change, count) in &diff.by_change {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"n\">{count}</td></tr>",
            change.as_str()
        );
    }
    html.push_str("</table><table><tr><th>baseline</th><th>candidate</th><th>events</th></tr>");
    for transition in &diff.transitions {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            transition.from.as_str(),
            transition.to.as_str(),
            transition.count
        );
    }
    html.push_str("</table>");
    group_table(
        html,
        "rules that decide changed events only in the candidate",
        &diff.rules_gained,
    );
    group_table(
        html,
        "rules that decided changed events only in the baseline",
        &diff.rules_lost,
    );
    diff_table(html, diff);
}

fn diff_table(html: &mut String, diff: &DiffSummary) {
    let _ = write!(
        html,
        "<h3>Changed events</h3><p>The first {} in input order; <code>diff.csv</code> lists \
         all.</p><table><tr><th>event</th><th>user</th><th>time</th><th>change</th>\
         <th>baseline</th><th>baseline rules</th><th>candidate</th><th>candidate rules</th></tr>",
        diff.samples.len()
    );
    for row in &diff.samples {
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&row.event_id),
            escape(&row.user_id),
            escape(&row.occurred_at),
            row.change.as_str(),
            row.baseline.requirement.as_str(),
            escape(&row.baseline.decided_by.join(", ")),
            row.candidate.requirement.as_str(),
            escape(&row.candidate.decided_by.join(", "))
        );
    }
    html.push_str("</table>\n");
}

fn breakdown_section(html: &mut String, set: &RuleSetSummary) {
    let _ = write!(
        html,
        "<h2>Breakdowns of the {} decisions</h2>",
        escape(&set.name)
    );
    group_table(html, "by event type", &set.by_event_type);
    group_table(html, "by country", &set.by_country);
    group_table(html, "by network class", &set.by_network);
    group_table(html, "by autonomous system", &set.by_asn);
    group_table(html, "by reason code", &set.by_reason_code);
    if !set.by_shadow_rule.is_empty() {
        group_table(
            html,
            "by shadow verdict (counted under the live requirement)",
            &set.by_shadow_rule,
        );
    }
    if !set.by_label.is_empty() {
        group_table(html, "by input label", &set.by_label);
    }
}

fn invalid_section(html: &mut String, summary: &Summary) {
    let input = &summary.input;
    if input.invalid == 0 {
        return;
    }
    let _ = write!(
        html,
        "<h2>Invalid records</h2><p>{} records were skipped; the first {} are listed, \
         <code>invalid.csv</code> has more.</p><table><tr><th>position</th><th>reason</th></tr>",
        input.invalid,
        input.invalid_samples.len()
    );
    for record in &input.invalid_samples {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            record.position,
            escape(&record.reason)
        );
    }
    html.push_str("</table>\n");
}

fn group_table(html: &mut String, title: &str, groups: &[Group]) {
    let _ = write!(
        html,
        "<h3>{}</h3><table><tr><th>key</th><th>decisions</th><th>allow</th><th>mfa</th>\
         <th>deny</th><th>step-up rate</th></tr>",
        escape(title)
    );
    for group in groups {
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&group.key),
            group.decisions,
            group.counts.allow,
            group.counts.mfa,
            group.counts.deny,
            percent(group.step_up_rate)
        );
    }
    html.push_str("</table>\n");
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}
