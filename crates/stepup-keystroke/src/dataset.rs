//! Readers for public keystroke-dynamics data sets, unchanged as published.
//!
//! Two layouts are recognised from the header line:
//!
//! - MEU-Mobile KSD: `subject,rep,Hold <key>,...,DD <key>.<key>,...,UD <key>.<key>,...` in
//!   milliseconds, with further columns (pressure, finger area, averages) that are ignored.
//! - CMU DSL-StrongPasswordData (Killourhy and Maxion): `subject,sessionIndex,rep,H.<key>,
//!   DD.<key>.<key>,UD.<key>.<key>,...` with the three kinds interleaved, in seconds.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use crate::features::{Features, NoSignal, SequenceTag};

/// Header that [`DatasetError::UnknownLayout`] shows for the MEU-Mobile KSD layout.
const MEU_HEADER: &str = "subject,rep,Hold <key>,...,DD <key>.<key>,...,UD <key>.<key>,...";

/// Header that [`DatasetError::UnknownLayout`] shows for the CMU layout.
const CMU_HEADER: &str = "subject,sessionIndex,rep,H.<key>,DD.<key>.<key>,UD.<key>.<key>,...";

/// Errors from [`read_dataset`] and [`parse_dataset`].
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be opened or is not valid CSV.
    #[error("failed to read keystroke data `{source_name}`: {cause}")]
    Read {
        /// File name or other label of the input.
        source_name: String,
        /// Underlying error.
        #[source]
        cause: csv::Error,
    },
    /// The header matches neither known layout.
    #[error(
        "failed to recognise the layout of `{source_name}`: expected a MEU-Mobile KSD header \
         `{MEU_HEADER}` or a CMU DSL-StrongPasswordData header `{CMU_HEADER}`"
    )]
    UnknownLayout {
        /// File name or other label of the input.
        source_name: String,
    },
    /// A feature cell is not a number.
    #[error(
        "failed to parse `{source_name}` line {line}, column `{column}`: `{value}` is not a number"
    )]
    Number {
        /// File name or other label of the input.
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: String,
        /// The cell as found.
        value: String,
    },
    /// A row has times that cannot form features.
    #[error("invalid row in `{source_name}` line {line}: {reason}")]
    Row {
        /// File name or other label of the input.
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// Reason the row was rejected.
        reason: NoSignal,
    },
    /// The input has a header but no rows.
    #[error("`{source_name}` has a header but no data rows")]
    Empty {
        /// File name or other label of the input.
        source_name: String,
    },
}

/// Column layout of a data set file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// MEU-Mobile KSD (Middle East University, touch screen, times in milliseconds).
    MeuMobileKsd,
    /// CMU DSL-StrongPasswordData (Killourhy and Maxion, keyboard, times in seconds).
    CmuStrongPassword,
}

impl Layout {
    /// Returns a human-readable name of the layout.
    pub fn title(self) -> &'static str {
        match self {
            Layout::MeuMobileKsd => "MEU-Mobile KSD",
            Layout::CmuStrongPassword => "CMU DSL-StrongPasswordData",
        }
    }
}

/// A keystroke data set: repetitions of one fixed field by several subjects.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// File name or other label of the input.
    pub source: String,
    /// Layout the file was read with.
    pub layout: Layout,
    /// Keys per repetition.
    pub key_count: usize,
    /// Subjects in order of first appearance.
    pub subjects: Vec<Subject>,
}

/// The repetitions of one subject, in file order.
#[derive(Clone, Debug)]
pub struct Subject {
    /// Subject id as written in the file.
    pub id: String,
    /// Repetitions in file order, which is typing order in both layouts.
    pub reps: Vec<Features>,
}

/// Column positions of the features and the unit conversion of one layout.
struct Columns {
    layout: Layout,
    hold: Vec<usize>,
    down_down: Vec<usize>,
    up_down: Vec<usize>,
    sequence: SequenceTag,
    to_ms: f64,
}

/// Reads a data set file in either layout.
pub fn read_dataset(path: &Path) -> Result<Dataset, DatasetError> {
    let source_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let file = File::open(path).map_err(|error| DatasetError::Read {
        source_name: source_name.clone(),
        cause: error.into(),
    })?;
    parse_dataset(file, &source_name)
}

/// Parses a data set in either layout from `input`; `source_name` labels it in errors.
pub fn parse_dataset<R: Read>(input: R, source_name: &str) -> Result<Dataset, DatasetError> {
    let read_error = |cause| DatasetError::Read {
        source_name: source_name.to_owned(),
        cause,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = reader.headers().map_err(read_error)?.clone();
    let columns = detect_layout(&header).ok_or_else(|| DatasetError::UnknownLayout {
        source_name: source_name.to_owned(),
    })?;

    let mut subjects: Vec<Subject> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(read_error)?;
        let features = parse_row(&record, &header, &columns, source_name)?;
        let id = record.get(0).unwrap_or_default();
        let index = *index_of.entry(id.to_owned()).or_insert_with(|| {
            subjects.push(Subject {
                id: id.to_owned(),
                reps: Vec::new(),
            });
            subjects.len() - 1
        });
        subjects[index].reps.push(features);
    }
    if subjects.is_empty() {
        return Err(DatasetError::Empty {
            source_name: source_name.to_owned(),
        });
    }
    Ok(Dataset {
        source: source_name.to_owned(),
        layout: columns.layout,
        key_count: columns.hold.len(),
        subjects,
    })
}

/// Recognises the layout from the header, or returns `None`.
fn detect_layout(header: &csv::StringRecord) -> Option<Columns> {
    let names: Vec<&str> = header.iter().collect();
    let (layout, prefixes, to_ms) = if names.starts_with(&["subject", "sessionIndex", "rep"]) {
        (Layout::CmuStrongPassword, ["H.", "DD.", "UD."], 1000.0)
    } else if names.starts_with(&["subject", "rep"]) {
        (Layout::MeuMobileKsd, ["Hold ", "DD ", "UD "], 1.0)
    } else {
        return None;
    };
    let positions = |prefix: &str| -> Vec<usize> {
        (0..names.len())
            .filter(|&index| names[index].starts_with(prefix))
            .collect()
    };
    let (hold, down_down, up_down) = (
        positions(prefixes[0]),
        positions(prefixes[1]),
        positions(prefixes[2]),
    );
    let keys = hold.len();
    if keys < 2 || down_down.len() + 1 != keys || up_down.len() + 1 != keys {
        return None;
    }
    let key_names = hold.iter().map(|&index| &names[index][prefixes[0].len()..]);
    Some(Columns {
        layout,
        sequence: SequenceTag::of_keys(key_names),
        hold,
        down_down,
        up_down,
        to_ms,
    })
}

fn parse_row(
    record: &csv::StringRecord,
    header: &csv::StringRecord,
    columns: &Columns,
    source_name: &str,
) -> Result<Features, DatasetError> {
    let line = record.position().map_or(0, |position| position.line());
    let cells = |indices: &[usize]| -> Result<Vec<f64>, DatasetError> {
        indices
            .iter()
            .map(|&index| {
                let value = record.get(index).unwrap_or_default();
                value
                    .parse::<f64>()
                    .map(|number| number * columns.to_ms)
                    .map_err(|_| DatasetError::Number {
                        source_name: source_name.to_owned(),
                        line,
                        column: header.get(index).unwrap_or_default().to_owned(),
                        value: value.to_owned(),
                    })
            })
            .collect()
    };
    let hold = cells(&columns.hold)?;
    let down_down = cells(&columns.down_down)?;
    let up_down = cells(&columns.up_down)?;
    Features::from_row(Some(columns.sequence), &hold, &down_down, &up_down).map_err(|reason| {
        DatasetError::Row {
            source_name: source_name.to_owned(),
            line,
            reason,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::features::FeatureKind;

    fn crate_path(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
    }

    #[test]
    fn meu_file_has_expected_shape() {
        let path = crate_path("../../data/keystroke/meu-mobile-ksd/meu_mobile_ksd.csv");

        let dataset = read_dataset(&path).expect("the shipped MEU file parses");

        assert_eq!(dataset.layout, Layout::MeuMobileKsd);
        assert_eq!(dataset.key_count, 14);
        assert_eq!(dataset.subjects.len(), 56);
        assert!(
            dataset
                .subjects
                .iter()
                .all(|subject| subject.reps.len() == 51)
        );
        let first = &dataset.subjects[0].reps[0];
        assert_eq!(first.values().len(), 40);
        // First row of the file: Hold . = 89, DD ..t = 383, UD ..t = 294.
        assert_eq!(first.of_kind(FeatureKind::Hold)[0], 89.0);
        assert_eq!(first.of_kind(FeatureKind::DownDown)[0], 383.0);
        assert_eq!(first.of_kind(FeatureKind::UpDown)[0], 294.0);
    }

    #[test]
    fn cmu_fixture_is_read_in_milliseconds() {
        let path = crate_path("tests/fixtures/cmu-layout-synthetic.csv");

        let dataset = read_dataset(&path).expect("the fixture parses");

        assert_eq!(dataset.layout, Layout::CmuStrongPassword);
        assert_eq!(dataset.key_count, 11);
        let ids: Vec<&str> = dataset.subjects.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["s901", "s902", "s903"]);
        assert!(
            dataset
                .subjects
                .iter()
                .all(|subject| subject.reps.len() == 12)
        );
        let first = &dataset.subjects[0].reps[0];
        assert_eq!(first.values().len(), 31);
        // First row: H.period = 0.1100 s, DD.period.t = 0.3000 s, UD.period.t = 0.1900 s.
        assert!((first.of_kind(FeatureKind::Hold)[0] - 110.0).abs() < 1e-9);
        assert!((first.of_kind(FeatureKind::DownDown)[0] - 300.0).abs() < 1e-9);
        assert!((first.of_kind(FeatureKind::UpDown)[0] - 190.0).abs() < 1e-9);
    }

    #[test]
    fn cmu_interleaved_columns_are_grouped_by_kind() {
        let csv = "subject,sessionIndex,rep,H.a,DD.a.b,UD.a.b,H.b,DD.b.c,UD.b.c,H.c\n\
                   s1,1,1,0.1,0.3,0.2,0.12,0.25,0.13,0.09\n";

        let dataset = parse_dataset(csv.as_bytes(), "inline").expect("valid CMU layout");

        let values = dataset.subjects[0].reps[0].values();
        let expected = [100.0, 120.0, 90.0, 300.0, 250.0, 200.0, 130.0];
        for (value, expected) in values.iter().zip(expected) {
            assert!((value - expected).abs() < 1e-9, "{values:?}");
        }
    }

    #[test]
    fn unknown_header_names_file_and_expected_layouts() {
        let csv = "user,attempt,key,time\nu1,1,a,0.1\n";

        let error = parse_dataset(csv.as_bytes(), "mystery.csv").expect_err("unknown layout");

        let message = error.to_string();
        assert!(message.contains("`mystery.csv`"), "{message}");
        assert!(message.contains(MEU_HEADER), "{message}");
        assert!(message.contains(CMU_HEADER), "{message}");
    }

    #[test]
    fn inconsistent_feature_counts_are_an_unknown_layout() {
        let csv = "subject,rep,Hold a,Hold b,DD a.b,UD a.b,UD b.c\n1,1,1,2,3,4,5\n";

        let error = parse_dataset(csv.as_bytes(), "odd.csv").expect_err("three UD columns");

        assert!(matches!(error, DatasetError::UnknownLayout { .. }));
    }

    #[test]
    fn bad_cell_names_line_and_column() {
        let csv = "subject,rep,Hold a,Hold b,DD a.b,UD a.b\n1,1,80,90,200,120\n1,2,80,x,200,120\n";

        let error = parse_dataset(csv.as_bytes(), "bad.csv").expect_err("non-numeric cell");

        assert_eq!(
            error.to_string(),
            "failed to parse `bad.csv` line 3, column `Hold b`: `x` is not a number"
        );
    }

    #[test]
    fn header_only_file_is_empty() {
        let csv = "subject,rep,Hold a,Hold b,DD a.b,UD a.b\n";

        let error = parse_dataset(csv.as_bytes(), "empty.csv").expect_err("no rows");

        assert!(matches!(error, DatasetError::Empty { .. }));
    }

    #[test]
    fn missing_file_names_the_file() {
        let error = read_dataset(Path::new("/nonexistent/keys.csv")).expect_err("no such file");

        assert!(
            error
                .to_string()
                .starts_with("failed to read keystroke data `keys.csv`")
        );
    }
}
