//! `ferry drift`: offline data drift between a reference (a CSV file, or a package's reference profile) and a
//! current CSV file, with Evidently's numbers; a table, JSON, and an HTML report with a histogram per column.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use ferry_monitor::drift::{Column, ColumnDrift, Histograms, Method, column_drift, dataset_drift, histograms};
use ferry_package::is_missing;
use serde::Serialize;

/// `ferry drift --reference REF --current CUR`
#[derive(Debug, Args)]
pub struct DriftArgs {
    /// Reference data: a CSV file with a header, or a .ferry package (its profile's reference sample: every value
    /// when the reference had at most 5,000, else a uniform sample of 5,000).
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
    let reference = load_reference(&args.reference)?;
    let current = read_csv(&args.current)?;
    let wanted: Vec<String> = if args.columns.is_empty() {
        reference.iter().map(|(name, _)| name.clone()).filter(|name| current.contains_key(name)).collect()
    } else {
        args.columns.clone()
    };
    if wanted.is_empty() {
        bail!("{} and {} have no column in common", args.reference.display(), args.current.display());
    }
    let mut columns = Vec::with_capacity(wanted.len());
    for name in &wanted {
        let (_, reference_values) = reference
            .iter()
            .find(|(n, _)| n == name)
            .with_context(|| format!("the reference has no column {name:?}"))?;
        let current_values =
            current.get(name).with_context(|| format!("{} has no column {name:?}", args.current.display()))?;
        let (r, c) = columns_of(name, reference_values, current_values)?;
        let drift = match column_drift(&r, &c, method, args.threshold) {
            Ok(d) => d,
            // A column with no values on a side cannot be tested; the others still can, unless it was asked for.
            Err(e @ ferry_monitor::drift::DriftError::Empty(_)) if args.columns.is_empty() => {
                eprintln!("column {name:?} skipped: {e}");
                continue;
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("column {name:?}"))),
        };
        let hist = histograms(&r, &c).with_context(|| format!("column {name:?}"))?;
        let kind = if matches!(r, Column::Numerical(_)) { "numerical" } else { "categorical" };
        columns.push(ColumnReport { column: name.clone(), kind, drift, histograms: hist });
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

/// Raw cells of one column (missing cells already left out), or a typed sample from a package's profile.
enum Values {
    Cells(Vec<String>),
    Numbers(Vec<f64>),
}

/// The reference's columns in order: from a CSV file, or from a package's profile.
fn load_reference(path: &Path) -> anyhow::Result<Vec<(String, Values)>> {
    if path.extension().is_some_and(|e| e == "ferry") {
        let bytes = ferry_package::read_small_file(path, ferry_package::PROFILE_PATH, 512 << 20)
            .with_context(|| format!("{} has no reference profile (pack it with --reference)", path.display()))?;
        let profile: ferry_package::Profile =
            serde_json::from_slice(&bytes).with_context(|| format!("the profile of {}", path.display()))?;
        return Ok(profile
            .features
            .into_iter()
            .map(|f| {
                let values = match f.kind {
                    ferry_package::ColumnKind::Numerical => Values::Numbers(f.sample),
                    ferry_package::ColumnKind::Categorical => Values::Cells(f.category_sample),
                };
                (f.name, values)
            })
            .collect());
    }
    let table = read_csv(path)?;
    let order = csv_header(path)?;
    Ok(order.into_iter().filter_map(|name| table.get(&name).map(|v| (name, Values::Cells(v.clone())))).collect())
}

fn csv_header(path: &Path) -> anyhow::Result<Vec<String>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(reader
        .headers()
        .with_context(|| format!("{} has no header row", path.display()))?
        .iter()
        .map(str::to_owned)
        .collect())
}

/// Every column of a CSV file, missing cells (empty, NA, NaN, null, None, ±inf) left out.
fn read_csv(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header: Vec<String> = reader
        .headers()
        .with_context(|| format!("{} has no header row", path.display()))?
        .iter()
        .map(str::to_owned)
        .collect();
    if header.is_empty() {
        bail!("{} has an empty header row", path.display());
    }
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); header.len()];
    let mut rows = 0usize;
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{} row {}", path.display(), line + 2))?;
        for (cell, column) in record.iter().zip(columns.iter_mut()) {
            if !is_missing(cell) {
                column.push(cell.trim().to_owned());
            }
        }
        rows += 1;
    }
    if rows == 0 {
        bail!("{} has a header but no rows", path.display());
    }
    Ok(header.into_iter().zip(columns).collect())
}

/// Both sides as numbers when every value of both parses as one, else both as labels; a column the package's
/// profile holds as numbers must be numbers in the current data too.
fn columns_of(name: &str, reference: &Values, current: &[String]) -> anyhow::Result<(Column, Column)> {
    let numbers = |cells: &[String]| cells.iter().map(|c| c.parse::<f64>().ok()).collect::<Option<Vec<f64>>>();
    Ok(match (reference, numbers(current)) {
        (Values::Numbers(r), Some(c)) => (Column::Numerical(r.clone()), Column::Numerical(c)),
        (Values::Numbers(_), None) => {
            let bad = current.iter().find(|c| c.parse::<f64>().is_err()).cloned().unwrap_or_default();
            bail!("column {name:?} is numerical in the reference, but the current data holds {bad:?}");
        }
        (Values::Cells(r), Some(c)) if numbers(r).is_some() => {
            (Column::Numerical(numbers(r).unwrap_or_default()), Column::Numerical(c))
        }
        (Values::Cells(r), _) => (Column::Categorical(r.clone()), Column::Categorical(current.to_vec())),
    })
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
    for (i, label) in h.bins.iter().enumerate() {
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
