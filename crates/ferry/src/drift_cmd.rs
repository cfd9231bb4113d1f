//! `ferry drift`: offline data drift between a reference (a CSV file, or a package's reference profile) and a
//! current CSV file, with Evidently's numbers; a table, JSON, and an HTML report with a histogram per column.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::num::NonZero;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use clap::Args;
use ferry_monitor::drift::{Column, ColumnDrift, DriftError, Histograms, Method, column_report, dataset_drift};
use ferry_package::is_missing;
use serde::Serialize;

/// `ferry drift --reference REF --current CUR`
#[derive(Debug, Args)]
pub struct DriftArgs {
    /// Reference data: a CSV file with a header, or a .ferry package (its profile's reference sample: every value
    /// when the reference had at most the cap of `ferry pack --reference-cap` (100,000 by default), else a uniform
    /// sample of that many).
    #[arg(long, value_name = "CSV|PACKAGE")]
    pub reference: PathBuf,
    /// Current data: a CSV file with a header.
    #[arg(long, value_name = "CSV")]
    pub current: PathBuf,
    /// Test every column with this method instead of Evidently's default choice: ks, chisquare, z, wasserstein,
    /// jensenshannon, psi, kl_div or hellinger.
    #[arg(long)]
    pub method: Option<String>,
    /// The method's threshold (default: Evidently's for it: 0.05 for p-values, 0.1 for distances).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Share of drifted columns at which the dataset counts as drifted.
    #[arg(long, default_value_t = 0.5)]
    pub drift_share: f64,
    /// Only these columns (comma-separated; default: every column of the reference that the current data has).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write an HTML report with a reference-vs-current histogram per column.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Exit with status 3 when the dataset drifted (for pipelines).
    #[arg(long)]
    pub fail_on_drift: bool,
}

/// One column's result, as printed.
#[derive(Debug, Serialize)]
struct ColumnReport {
    column: String,
    kind: &'static str,
    #[serde(flatten)]
    drift: ColumnDrift,
    histograms: Histograms,
}

/// The whole result, as printed with `--json`.
#[derive(Debug, Serialize)]
struct Report {
    reference: String,
    current: String,
    columns: Vec<ColumnReport>,
    drift_share: f64,
    drifted_share: f64,
    dataset_drift: bool,
}

/// Exit status for "the dataset drifted" with `--fail-on-drift`.
pub const DRIFT_EXIT: u8 = 3;

/// Runs the command; `Ok(true)` when the dataset drifted.
pub fn run(args: &DriftArgs) -> anyhow::Result<bool> {
    let method = match &args.method {
        Some(name) => Some(Method::from_name(name).with_context(|| {
            let known: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            format!("unknown drift method {name:?}; known: {}", known.join(", "))
        })?),
        None => None,
    };
    if !(0.0..=1.0).contains(&args.drift_share) {
        bail!("--drift-share must be between 0 and 1, got {}", args.drift_share);
    }
    let Inputs { reference, current, pairs } = read_inputs(&args.reference, &args.current, &args.columns)?;
    let outcomes = parallel_map(&pairs, |pair| {
        test_column(&pair.name, reference.side(pair.reference), &current.columns[pair.current], method, args)
    });
    let mut columns = Vec::with_capacity(pairs.len());
    for (pair, outcome) in pairs.iter().zip(outcomes) {
        match outcome? {
            Outcome::Tested(report) => columns.push(*report),
            Outcome::Skipped(e) => eprintln!("column {:?} skipped: {e}", pair.name),
        }
    }
    let drifts: Vec<ColumnDrift> = columns.iter().map(|c| c.drift.clone()).collect();
    let (share, drifted) = dataset_drift(&drifts, args.drift_share);
    let report = Report {
        reference: args.reference.display().to_string(),
        current: args.current.display().to_string(),
        columns,
        drift_share: args.drift_share,
        drifted_share: share,
        dataset_drift: drifted,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html(&report)).with_context(|| format!("cannot write {}", path.display()))?;
        if !args.json {
            println!("report written to {}", path.display());
        }
    }
    Ok(drifted)
}

/// Both sides' columns, and the columns to test.
struct Inputs {
    reference: Reference,
    current: Table,
    pairs: Vec<Pair>,
}

/// One column to test: its name and its position on each side.
struct Pair {
    name: String,
    reference: usize,
    current: usize,
}

/// Reads both sides and finds the columns to test on each: `columns`, or else every column of the reference that
/// the current file has.
fn read_inputs(reference_path: &Path, current_path: &Path, columns: &[String]) -> anyhow::Result<Inputs> {
    // The two files are parsed side by side; a reference error is reported first, as if read first.
    let (reference, current) = std::thread::scope(|scope| {
        let reference = scope.spawn(|| load_reference(reference_path));
        let current = read_table(current_path);
        (joined(reference), current)
    });
    let (mut reference, mut current) = (reference?, current?);
    let wanted: Vec<&str> = if columns.is_empty() {
        reference.names().into_iter().filter(|name| current.position(name).is_some()).collect()
    } else {
        columns.iter().map(String::as_str).collect()
    };
    if wanted.is_empty() {
        bail!("{} and {} have no column in common", reference_path.display(), current_path.display());
    }
    let mut pairs = Vec::with_capacity(wanted.len());
    for name in wanted {
        let r = reference.position(name).with_context(|| format!("the reference has no column {name:?}"))?;
        let c = current.position(name).with_context(|| format!("{} has no column {name:?}", current_path.display()))?;
        pairs.push(Pair { name: name.to_owned(), reference: r, current: c });
    }
    read_as_text(&mut reference, &mut current, &pairs)?;
    Ok(Inputs { reference, current, pairs })
}

/// What became of one column.
enum Outcome {
    Tested(Box<ColumnReport>),
    /// A side had no values: noted, and left out of the report.
    Skipped(DriftError),
}

/// Tests one column: its two sides typed, Evidently's test, and both histograms.
fn test_column(
    name: &str,
    reference: Side<'_>,
    current: &Cells,
    method: Option<Method>,
    args: &DriftArgs,
) -> anyhow::Result<Outcome> {
    let (r, c) = columns_of(name, reference, current)?;
    let (drift, hist) = match column_report(&r, &c, method, args.threshold) {
        Ok(d) => d,
        // A column with no values on a side cannot be tested; the others still can, unless it was asked for.
        Err(e @ DriftError::Empty(_)) if args.columns.is_empty() => return Ok(Outcome::Skipped(e)),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("column {name:?}"))),
    };
    let kind = if matches!(r, Column::Numerical(_)) { "numerical" } else { "categorical" };
    Ok(Outcome::Tested(Box::new(ColumnReport { column: name.to_owned(), kind, drift, histograms: hist })))
}

/// Runs `job` on every item on up to one thread per core, each thread taking the next item when it is done; the
/// results in the items' order.
fn parallel_map<T: Sync, R: Send>(items: &[T], job: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, NonZero::get).min(items.len());
    if threads <= 1 {
        return items.iter().map(job).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { return done };
                        done.push((i, job(item)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(joined).collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// A scoped thread's result; its panic goes on in the caller.
fn joined<R>(handle: std::thread::ScopedJoinHandle<'_, R>) -> R {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

// ---------------------------------------------------------------------------------------------------------------
// Reading: each CSV column goes straight into numbers, or into labels stored once per distinct value.

/// One CSV column as read: missing cells (empty, NA, NaN, null, None) left out, the others trimmed.
#[derive(Debug)]
enum Cells {
    /// Every value parsed as a number.
    Numbers(Vec<f64>),
    /// The first value was not a number: every value, as text.
    Labels(Labels),
    /// Numbers, then this value that is not one. The column is text; its values are read again as labels when the
    /// test needs them (see [`read_as_text`]).
    Mixed(String),
}

impl Cells {
    fn push(&mut self, value: &str) {
        match self {
            Self::Numbers(numbers) => match value.parse::<f64>() {
                Ok(x) => numbers.push(x),
                Err(_) if numbers.is_empty() => {
                    let mut labels = Labels::default();
                    labels.push(value);
                    *self = Self::Labels(labels);
                }
                Err(_) => *self = Self::Mixed(value.to_owned()),
            },
            Self::Labels(labels) => labels.push(value),
            Self::Mixed(_) => {}
        }
    }

    /// Whether the values are at hand as labels (a column with no values is empty either way).
    fn has_labels(&self) -> bool {
        match self {
            Self::Numbers(numbers) => numbers.is_empty(),
            Self::Labels(_) => true,
            Self::Mixed(_) => false,
        }
    }

    /// Every value as a label, when [`Self::has_labels`].
    fn labels(&self) -> Option<Vec<String>> {
        match self {
            Self::Labels(labels) => Some(labels.to_vec()),
            Self::Numbers(numbers) if numbers.is_empty() => Some(Vec::new()),
            Self::Numbers(_) | Self::Mixed(_) => None,
        }
    }

    /// The first value that is not a number.
    fn first_text(&self) -> Option<&str> {
        match self {
            Self::Numbers(_) => None,
            Self::Labels(labels) => labels.distinct.first().map(String::as_str),
            Self::Mixed(text) => Some(text),
        }
    }
}

/// Text values, each distinct one stored once.
#[derive(Debug, Default)]
struct Labels {
    /// The distinct values, in order of first appearance.
    distinct: Vec<String>,
    index: HashMap<String, usize>,
    /// Per value, its position in `distinct`.
    codes: Vec<usize>,
}

impl Labels {
    fn push(&mut self, value: &str) {
        let code = if let Some(&code) = self.index.get(value) {
            code
        } else {
            self.distinct.push(value.to_owned());
            self.index.insert(value.to_owned(), self.distinct.len() - 1);
            self.distinct.len() - 1
        };
        self.codes.push(code);
    }

    /// Every value, in order.
    fn to_vec(&self) -> Vec<String> {
        self.codes.iter().map(|&code| self.distinct[code].clone()).collect()
    }
}

/// A CSV file's columns, in header order.
struct Table {
    path: PathBuf,
    header: Vec<String>,
    columns: Vec<Cells>,
}

impl Table {
    /// The column of this name (the last one when the header repeats it).
    fn position(&self, name: &str) -> Option<usize> {
        self.header.iter().rposition(|h| h == name)
    }

    /// Reads the columns at `positions` again, as labels.
    fn read_as_labels(&mut self, positions: &BTreeSet<usize>) -> anyhow::Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let (mut reader, _) = open_csv(&self.path)?;
        let mut labels: Vec<(usize, Labels)> = positions.iter().map(|&i| (i, Labels::default())).collect();
        for_each_row(&mut reader, &self.path, |record| {
            for (i, column) in &mut labels {
                let cell = record.get(*i).unwrap_or_default().trim();
                if !is_missing(cell) {
                    column.push(cell);
                }
            }
        })?;
        for (i, column) in labels {
            self.columns[i] = Cells::Labels(column);
        }
        Ok(())
    }
}

/// Every column of a CSV file, typed as it is read.
fn read_table(path: &Path) -> anyhow::Result<Table> {
    let (mut reader, header) = open_csv(path)?;
    if header.is_empty() {
        bail!("{} has an empty header row", path.display());
    }
    let mut columns: Vec<Cells> = header.iter().map(|_| Cells::Numbers(Vec::new())).collect();
    let rows = for_each_row(&mut reader, path, |record| {
        for (cell, column) in record.iter().zip(columns.iter_mut()) {
            let cell = cell.trim();
            if !is_missing(cell) {
                column.push(cell);
            }
        }
    })?;
    if rows == 0 {
        bail!("{} has a header but no rows", path.display());
    }
    for column in &mut columns {
        if let Cells::Numbers(numbers) = column {
            numbers.shrink_to_fit();
        }
    }
    Ok(Table { path: path.to_owned(), header, columns })
}

/// A CSV reader past its header row, and the header.
fn open_csv(path: &Path) -> anyhow::Result<(csv::Reader<std::fs::File>, Vec<String>)> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("{} has no header row", path.display()))?
        .iter()
        .map(str::to_owned)
        .collect();
    Ok((reader, header))
}

/// Calls `each` on every row after the header, one record reused; the number of rows.
fn for_each_row(
    reader: &mut csv::Reader<std::fs::File>,
    path: &Path,
    mut each: impl FnMut(&csv::StringRecord),
) -> anyhow::Result<usize> {
    let mut record = csv::StringRecord::new();
    let mut rows = 0;
    while reader.read_record(&mut record).with_context(|| format!("{} row {}", path.display(), rows + 2))? {
        each(&record);
        rows += 1;
    }
    Ok(rows)
}

/// The reference: a CSV file, or a package's profile.
enum Reference {
    Csv(Table),
    /// Each feature's reference sample: every value when the reference fitted the cap, else a uniform sample.
    Profile(Vec<ferry_package::ColumnProfile>),
}

impl Reference {
    /// The column names, in order.
    fn names(&self) -> Vec<&str> {
        match self {
            Self::Csv(table) => table.header.iter().map(String::as_str).collect(),
            Self::Profile(features) => features.iter().map(|f| f.name.as_str()).collect(),
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        match self {
            Self::Csv(table) => table.position(name),
            Self::Profile(features) => features.iter().position(|f| f.name == name),
        }
    }

    fn side(&self, position: usize) -> Side<'_> {
        match self {
            Self::Csv(table) => Side::Csv(&table.columns[position]),
            Self::Profile(features) => {
                let feature = &features[position];
                match feature.kind {
                    ferry_package::ColumnKind::Numerical => Side::ProfileNumbers(&feature.sample),
                    ferry_package::ColumnKind::Categorical => Side::ProfileLabels(&feature.category_sample),
                }
            }
        }
    }
}

/// The reference's side of one column.
#[derive(Debug, Clone, Copy)]
enum Side<'a> {
    /// A CSV column, typed by its content.
    Csv(&'a Cells),
    /// A numerical feature's sample: numbers, whatever the current data holds.
    ProfileNumbers(&'a [f64]),
    /// A categorical feature's sample: numbers when every value parses as one.
    ProfileLabels(&'a [String]),
}

impl Side<'_> {
    fn numbers(self) -> Option<Vec<f64>> {
        match self {
            Self::Csv(Cells::Numbers(numbers)) => Some(numbers.clone()),
            Self::ProfileNumbers(numbers) => Some(numbers.to_vec()),
            Self::Csv(_) => None,
            Self::ProfileLabels(labels) => labels.iter().map(|l| l.parse::<f64>().ok()).collect(),
        }
    }

    fn is_numbers(self) -> bool {
        match self {
            Self::Csv(cells) => matches!(cells, Cells::Numbers(_)),
            Self::ProfileNumbers(_) => true,
            Self::ProfileLabels(labels) => labels.iter().all(|l| l.parse::<f64>().is_ok()),
        }
    }
}

/// The reference's columns in order: from a CSV file, or from a package's profile.
fn load_reference(path: &Path) -> anyhow::Result<Reference> {
    if path.extension().is_some_and(|e| e == "ferry") {
        let bytes = ferry_package::read_small_file(path, ferry_package::PROFILE_PATH, 512 << 20)
            .with_context(|| format!("{} has no reference profile (pack it with --reference)", path.display()))?;
        let profile: ferry_package::Profile =
            serde_json::from_slice(&bytes).with_context(|| format!("the profile of {}", path.display()))?;
        return Ok(Reference::Profile(profile.features));
    }
    Ok(Reference::Csv(read_table(path)?))
}

/// Reads again, as labels, the columns that are compared as labels but were read as numbers (or as numbers then
/// text): a column is numbers only when both of its sides are.
fn read_as_text(reference: &mut Reference, current: &mut Table, pairs: &[Pair]) -> anyhow::Result<()> {
    let (mut in_reference, mut in_current) = (BTreeSet::new(), BTreeSet::new());
    for pair in pairs {
        let (r, c) = (reference.side(pair.reference), &current.columns[pair.current]);
        let numerical = r.is_numbers() && matches!(c, Cells::Numbers(_));
        // A package's numbers facing text are an error, reported when the column is tested.
        if numerical || matches!(r, Side::ProfileNumbers(_)) {
            continue;
        }
        if matches!(r, Side::Csv(cells) if !cells.has_labels()) {
            in_reference.insert(pair.reference);
        }
        if !c.has_labels() {
            in_current.insert(pair.current);
        }
    }
    if let Reference::Csv(table) = reference {
        table.read_as_labels(&in_reference)?;
    }
    current.read_as_labels(&in_current)
}

/// Both sides as numbers when every value of both is one, else both as labels; a column the package's profile
/// holds as numbers must be numbers in the current data too.
fn columns_of(name: &str, reference: Side<'_>, current: &Cells) -> anyhow::Result<(Column, Column)> {
    if let Cells::Numbers(c) = current
        && let Some(r) = reference.numbers()
    {
        return Ok((Column::Numerical(r), Column::Numerical(c.clone())));
    }
    let reference = match reference {
        Side::ProfileNumbers(_) => {
            let bad = current.first_text().unwrap_or_default();
            bail!("column {name:?} is numerical in the reference, but the current data holds {bad:?}");
        }
        Side::ProfileLabels(labels) => Some(labels.to_vec()),
        Side::Csv(cells) => cells.labels(),
    };
    match (reference, current.labels()) {
        (Some(r), Some(c)) => Ok((Column::Categorical(r), Column::Categorical(c))),
        // read_as_text read every such column again as labels.
        _ => bail!("internal error: column {name:?} was not read as text"),
    }
}

fn print_table(report: &Report) {
    let mut table = crate::table::new(&["column", "kind", "test", "score", "threshold", "drift"]);
    for c in &report.columns {
        table.add_row(vec![
            c.column.clone(),
            c.kind.to_owned(),
            format!("{}{}", c.drift.method.name(), if c.drift.default_method { "" } else { " (chosen)" }),
            format!("{:.6}", c.drift.score),
            format!("{}", c.drift.threshold),
            if c.drift.drifted { "DRIFT".into() } else { "-".into() },
        ]);
    }
    println!("{table}");
    let drifted = report.columns.iter().filter(|c| c.drift.drifted).count();
    println!(
        "dataset drift: {} ({drifted} of {} columns drifted, share {:.3}; threshold {})",
        if report.dataset_drift { "YES" } else { "no" },
        report.columns.len(),
        report.drifted_share,
        report.drift_share
    );
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A self-contained HTML page: the verdicts, and per column an SVG bar chart of both histograms.
fn html(report: &Report) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ferry drift report</title>\n<style>\
         body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse}\
         td,th{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:left}.drift{color:#b00020;font-weight:600}\
         section{margin:2rem 0}.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem}\
         </style></head><body>\n",
    );
    let _ = writeln!(
        out,
        "<h1>Data drift</h1><p>Reference <code>{}</code> · current <code>{}</code></p>",
        esc(&report.reference),
        esc(&report.current)
    );
    let drifted = report.columns.iter().filter(|c| c.drift.drifted).count();
    let _ = writeln!(
        out,
        "<p id=\"verdict\" class=\"{}\">Dataset drift: {} — {drifted} of {} columns drifted (share {:.3}, threshold {}).</p>",
        if report.dataset_drift { "drift" } else { "" },
        if report.dataset_drift { "yes" } else { "no" },
        report.columns.len(),
        report.drifted_share,
        report.drift_share
    );
    out.push_str(
        "<table><tr><th>column</th><th>kind</th><th>test</th><th>score</th><th>threshold</th><th>drift</th></tr>\n",
    );
    for c in &report.columns {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.6}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&c.column),
            c.kind,
            c.drift.method.name(),
            c.drift.score,
            c.drift.threshold,
            if c.drift.drifted { "drift" } else { "" },
            if c.drift.drifted { "drift" } else { "no" }
        );
    }
    out.push_str("</table>\n");
    for c in &report.columns {
        let _ = writeln!(
            out,
            "<section><h2>{}</h2><div class=\"legend\"><span style=\"background:#4c78a8\"></span>reference\
             <span style=\"background:#f58518\"></span>current</div>{}</section>",
            esc(&c.column),
            chart(&c.histograms)
        );
    }
    out.push_str("</body></html>\n");
    out
}

/// Paired bars per bin, heights as shares, bin labels under them.
fn chart(h: &Histograms) -> String {
    let (width, height, pad) = (720.0_f64, 220.0_f64, 30.0_f64);
    let top = h.reference.iter().chain(&h.current).copied().fold(0.0_f64, f64::max).max(1e-12);
    #[allow(clippy::cast_precision_loss)]
    let slot = (width - 2.0 * pad) / h.bins.len().max(1) as f64;
    let mut svg = format!(
        "<svg class=\"histogram\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" role=\"img\">",
        height + 60.0
    );
    for (i, label) in h.bins.labels().iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let x = pad + slot * i as f64;
        for (k, (share, colour)) in [(h.reference[i], "#4c78a8"), (h.current[i], "#f58518")].into_iter().enumerate() {
            let bar = (height - pad) * share / top;
            #[allow(clippy::cast_precision_loss)]
            let bx = x + slot * (0.1 + 0.4 * k as f64);
            let _ = write!(
                svg,
                "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\" fill=\"{colour}\"><title>{}: {:.2}%</title></rect>",
                height - bar,
                slot * 0.4,
                esc(label),
                share * 100.0
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" transform=\"rotate(35 {:.1} {:.1})\">{}</text>",
            x + slot * 0.3,
            height + 12.0,
            x + slot * 0.3,
            height + 12.0,
            esc(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each column both files share, typed as it is tested.
    fn typed(reference: &str, current: &str) -> Vec<(String, Column, Column)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (r, c) = (dir.path().join("ref.csv"), dir.path().join("cur.csv"));
        std::fs::write(&r, reference).expect("write");
        std::fs::write(&c, current).expect("write");
        let inputs = read_inputs(&r, &c, &[]).expect("read");
        inputs
            .pairs
            .iter()
            .map(|p| {
                let side = inputs.reference.side(p.reference);
                let (a, b) = columns_of(&p.name, side, &inputs.current.columns[p.current]).expect("typed");
                (p.name.clone(), a, b)
            })
            .collect()
    }

    fn labels(values: &[&str]) -> Column {
        Column::Categorical(values.iter().map(|&v| v.to_owned()).collect())
    }

    #[test]
    fn a_column_is_numbers_only_when_both_sides_are_and_text_keeps_its_spelling() {
        let columns = typed(
            "n,mixed,tail,words,empty\n1.50, 1 ,1.50,a,\n2,2,2,b,NA\n3,x,3,c,\n",
            "n,mixed,tail,words,empty\n4,5,z,1,\n",
        );
        let want = [
            ("n", Column::Numerical(vec![1.5, 2.0, 3.0]), Column::Numerical(vec![4.0])),
            // Numbers, then text: read again as labels, as on the side that held only numbers.
            ("mixed", labels(&["1", "2", "x"]), labels(&["5"])),
            ("tail", labels(&["1.50", "2", "3"]), labels(&["z"])),
            ("words", labels(&["a", "b", "c"]), labels(&["1"])),
            // No values: left to the drift module, which skips the column.
            ("empty", Column::Numerical(vec![]), Column::Numerical(vec![])),
        ];
        assert_eq!(columns.len(), want.len());
        for ((name, r, c), (want_name, want_r, want_c)) in columns.iter().zip(want) {
            assert_eq!((name.as_str(), r, c), (want_name, &want_r, &want_c));
        }
    }

    #[test]
    fn text_where_the_package_holds_numbers_is_named() {
        let mut mixed = Cells::Numbers(Vec::new());
        for value in ["1", "2", "abc", "3"] {
            mixed.push(value);
        }
        let err = columns_of("x", Side::ProfileNumbers(&[1.0]), &mixed).expect_err("numbers vs text");
        assert_eq!(err.to_string(), "column \"x\" is numerical in the reference, but the current data holds \"abc\"");
    }
}
