//! `ferry pack`, `ferry inspect` and `ferry verify`: making a package and looking inside one.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use ferry_engine::Engine;
use ferry_package::{
    ColumnKind, ColumnProfile, ColumnProfiler, FORMAT_VERSION, FeatureLayout, Framework, Lineage, MODEL_PATH, Manifest,
    PROFILE_PATH, PackageInput, Profile, Task, Validation, read_onnx_info, read_small_file, verify, write_package,
};
use ferry_serving::{EngineChoice, EngineSettings, open_engine, signature_mismatch};
use ferry_types::{ModelName, NamedTensor, TensorData};
use sha2::{Digest, Sha256};

use crate::progress;

/// Rows sent to the model at once while profiling and validating.
const BATCH_ROWS: usize = 1024;

/// `ferry pack MODEL.onnx --name NAME …`
#[derive(Debug, Args)]
pub struct PackArgs {
    /// The trained ONNX model.
    #[arg(value_name = "MODEL.onnx")]
    pub model: PathBuf,
    /// Model name: letters, digits, `_`, `-`, `.`.
    #[arg(long)]
    pub name: String,
    /// Output file [default: NAME.ferry].
    #[arg(short, long, value_name = "OUT.ferry")]
    pub output: Option<PathBuf>,
    /// CSV of training inputs (one column per model feature) to profile as the drift baseline.
    #[arg(long, value_name = "DATA.csv")]
    pub reference: Option<PathBuf>,
    /// Raw reference values kept per column for the drift tests (a uniform sample above it); drift equals
    /// Evidently's on the whole reference whenever it has no more rows than this.
    #[arg(long, value_name = "ROWS", default_value_t = ferry_package::SAMPLE_SIZE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub reference_cap: usize,
    /// CSV of held-out rows with a label column: the model is run on it and its metrics stored.
    #[arg(long, value_name = "DATA.csv", requires = "label")]
    pub validation: Option<PathBuf>,
    /// The label column of the validation CSV (also skipped in the reference CSV if present there).
    #[arg(long, value_name = "COLUMN")]
    pub label: Option<String>,
    /// Classification or regression [default: classification when the model has an integer output].
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,
    /// Free text.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Who owns the model.
    #[arg(long, default_value = "")]
    pub owner: String,
    /// Labels for search (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Free metadata, `key=value` (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
    /// SHA-256 of the package this model was derived from.
    #[arg(long, value_name = "SHA256")]
    pub parent: Option<String>,
    /// Commit of the training code.
    #[arg(long, value_name = "COMMIT")]
    pub source_commit: Option<String>,
    /// Engine used to read the signature and run the data: auto, onnxruntime or tract.
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: crate::settings::EngineArg,
    /// Path of libonnxruntime.so [env: FERRY_ONNXRUNTIME_LIB].
    #[arg(long, value_name = "FILE", env = "FERRY_ONNXRUNTIME_LIB")]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Sign the package with this secret key (`ferry keygen`).
    #[arg(long, value_name = "KEY_FILE")]
    pub sign: Option<PathBuf>,
}

/// `--task` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TaskArg {
    /// Class labels.
    Classification,
    /// Numbers.
    Regression,
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not key=value"))?;
    if k.trim().is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.trim().to_owned(), v.to_owned()))
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn run_pack(args: PackArgs) -> anyhow::Result<()> {
    let name = ModelName::new(args.name.as_str()).context("--name")?;
    if let Some(p) = &args.parent
        && !is_sha256(p)
    {
        bail!("--parent must be a package's SHA-256 (64 lowercase hex digits), got {p:?}");
    }
    if args.label.is_some() && args.validation.is_none() && args.reference.is_none() {
        bail!("--label names a column of --validation (or --reference) data; neither was given");
    }
    let output = args.output.clone().unwrap_or_else(|| PathBuf::from(format!("{name}.ferry")));
    // Read the signing key first, so that a bad key fails before minutes of packing.
    let signing_key = args.sign.as_deref().map(read_secret_key).transpose()?;
    let info = read_onnx_info(&args.model)?;
    let settings = EngineSettings { onnxruntime_lib: args.onnxruntime_lib.clone(), ..EngineSettings::default() };
    let (mut engine, kind) = open_engine(&args.model, EngineChoice::from(args.engine), &settings)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    let signature = engine.signature().clone();
    eprintln!(
        "loaded {} on {} ({} inputs, {} outputs)",
        args.model.display(),
        kind.name(),
        signature.inputs.len(),
        signature.outputs.len()
    );

    let mut features = Vec::new();
    let mut training_data = None;
    let profile = match &args.reference {
        Some(csv) => {
            let (profile, digest) = profile_reference(engine.as_mut(), csv, args.label.as_deref(), args.reference_cap)?;
            features = profile.features.iter().map(|c| c.name.clone()).collect();
            training_data = Some(digest);
            eprintln!(
                "profiled {} reference rows ({} features, {} output columns)",
                profile.rows,
                profile.features.len(),
                profile.outputs.len()
            );
            Some(profile)
        }
        None => None,
    };
    let validation = match (&args.validation, &args.label) {
        (Some(csv), Some(label)) => {
            let task = args.task.map(|t| match t {
                TaskArg::Classification => Task::Classification,
                TaskArg::Regression => Task::Regression,
            });
            let v = validate(engine.as_mut(), csv, label, task)?;
            eprintln!("validated on {} rows: {}", v.rows, format_metrics(&v.metrics));
            Some(v)
        }
        _ => None,
    };
    drop(engine);

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name,
        description: args.description,
        owner: args.owner,
        tags: args.tags,
        metadata: args.meta.into_iter().collect(),
        framework: Framework {
            producer: info.producer_name,
            producer_version: info.producer_version,
            ir_version: info.ir_version,
            opsets: info.opsets,
            packed_by: format!("ferry {}", env!("CARGO_PKG_VERSION")),
        },
        signature,
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        files: vec![],
        lineage: Lineage { parent: args.parent, training_data, source_commit: args.source_commit },
        features,
        validation,
    };
    let total = file_len(&args.model)? * 2 + args.validation.as_deref().map(file_len).transpose()?.unwrap_or(0) * 2;
    let bar = progress::bytes("packing", total);
    let input = PackageInput {
        manifest,
        model: &args.model,
        profile: profile.as_ref(),
        validation: args.validation.as_deref(),
    };
    let mut digest = write_package(input, &output, &|n| bar.set_position(n))?;
    bar.finish_and_clear();
    if let Some(key) = signing_key {
        let sig = ferry_package::sign_package(&output, &key)?;
        digest = ferry_package::sha256_file(&output, &|_| {})?.0;
        eprintln!("signed with key {}", sig.public_key);
    }
    println!("{} sha256:{digest}", output.display());
    Ok(())
}

fn file_len(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len())
}

/// A CSV read in batches of rows, hashed as it streams, with a progress bar.
struct CsvBatches {
    path: PathBuf,
    reader: csv::Reader<HashingReader>,
    headers: csv::StringRecord,
    next_line: u64,
    bar: indicatif::ProgressBar,
}

impl CsvBatches {
    fn open(path: &Path, what: &str) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let bar = progress::bytes(what, file.metadata().map(|m| m.len()).unwrap_or(0));
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(HashingReader::new(file, bar.clone()));
        let headers = reader.headers().with_context(|| format!("{}: cannot read the header", path.display()))?.clone();
        Ok(Self { path: path.to_owned(), reader, headers, next_line: 2, bar })
    }

    /// The next rows (at most [`BATCH_ROWS`]) and the CSV line of the first, or `None` at the end.
    fn next_batch(&mut self) -> anyhow::Result<Option<(Vec<csv::StringRecord>, u64)>> {
        let mut batch = Vec::with_capacity(BATCH_ROWS);
        let mut record = csv::StringRecord::new();
        while batch.len() < BATCH_ROWS {
            if !self.reader.read_record(&mut record).map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))? {
                break;
            }
            batch.push(record.clone());
        }
        if batch.is_empty() {
            return Ok(None);
        }
        let line = self.next_line;
        self.next_line += batch.len() as u64;
        Ok(Some((batch, line)))
    }

    /// The file's SHA-256; fails if it had no rows.
    fn finish(self) -> anyhow::Result<String> {
        self.bar.finish_and_clear();
        if self.next_line == 2 {
            bail!("{} has a header but no rows", self.path.display());
        }
        Ok(self.reader.into_inner().finish())
    }
}

fn run_model(engine: &mut dyn Engine, inputs: &[NamedTensor], line: u64) -> anyhow::Result<Vec<NamedTensor>> {
    let outputs: Vec<String> = engine.signature().outputs.iter().map(|o| o.name.clone()).collect();
    engine.infer(inputs, &outputs).map_err(|e| {
        anyhow::anyhow!("the model failed on the rows from line {line}: {}", ferry_engine::error_chain(&e))
    })
}

fn profile_reference(
    engine: &mut dyn Engine,
    csv_path: &Path,
    label: Option<&str>,
    cap: usize,
) -> anyhow::Result<(Profile, String)> {
    let signature = engine.signature().clone();
    let mut csv = CsvBatches::open(csv_path, "profiling")?;
    let label = label.filter(|l| csv.headers.iter().any(|h| h.trim() == *l));
    let layout = FeatureLayout::new(&signature, &csv.headers, label).with_context(|| csv_path.display().to_string())?;
    let mut features: Vec<ColumnProfiler> =
        layout.features.iter().enumerate().map(|(i, n)| ColumnProfiler::with_cap(n.clone(), i as u64, cap)).collect();
    let mut outputs: Vec<ColumnProfiler> = Vec::new();
    let mut rows = 0u64;
    while let Some((batch, line)) = csv.next_batch()? {
        let columns: Vec<usize> = layout.inputs.iter().flat_map(|i| i.columns.iter().copied()).collect();
        for row in &batch {
            for (profiler, &c) in features.iter_mut().zip(&columns) {
                profiler.push_str(row.get(c).unwrap_or(""));
            }
        }
        let tensors = layout.tensors(&batch, &csv.headers, line).with_context(|| csv_path.display().to_string())?;
        let out = run_model(engine, &tensors, line)?;
        if outputs.is_empty() {
            outputs = output_columns(&out)
                .into_iter()
                .enumerate()
                .map(|(i, n)| ColumnProfiler::with_cap(n, 1000 + i as u64, cap))
                .collect();
        }
        push_outputs(&out, &mut outputs);
        rows += batch.len() as u64;
    }
    let digest = csv.finish()?;
    let profile = Profile {
        rows,
        features: features.into_iter().map(ColumnProfiler::finish).collect(),
        outputs: outputs.into_iter().map(ColumnProfiler::finish).collect(),
    };
    Ok((profile, digest))
}

/// Column names for outputs: `name` for `[N]` / `[N, 1]`, `name[j]` for `[N, k]`.
fn output_columns(outputs: &[NamedTensor]) -> Vec<String> {
    let mut names = Vec::new();
    for o in outputs {
        if !profilable(o) {
            continue;
        }
        let width = row_width(o);
        if width == 1 {
            names.push(o.name.clone());
        } else {
            names.extend((0..width).map(|j| format!("{}[{j}]", o.name)));
        }
    }
    names
}

fn profilable(t: &NamedTensor) -> bool {
    !matches!(t.tensor.data(), TensorData::Bytes(_)) && t.tensor.shape().len() <= 2
}

fn row_width(t: &NamedTensor) -> usize {
    t.tensor.shape().get(1).copied().unwrap_or(1).max(1)
}

#[expect(clippy::cast_precision_loss, reason = "profiles and metrics are computed in f64")]
fn as_f64(t: &NamedTensor) -> Vec<f64> {
    match t.tensor.data() {
        TensorData::Bool(v) => v.iter().map(|b| f64::from(u8::from(*b))).collect(),
        TensorData::Uint8(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::Uint16(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::Uint32(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::Uint64(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Int8(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::Int16(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::Int32(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::Int64(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Fp16(v) => v.iter().map(|x| x.to_f64()).collect(),
        TensorData::Fp32(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::Fp64(v) => v.clone(),
        TensorData::Bf16(v) => v.iter().map(|x| x.to_f64()).collect(),
        TensorData::Bytes(_) => Vec::new(),
    }
}

fn push_outputs(outputs: &[NamedTensor], profilers: &mut [ColumnProfiler]) {
    let mut col = 0;
    for o in outputs.iter().filter(|o| profilable(o)) {
        let width = row_width(o);
        for (i, v) in as_f64(o).into_iter().enumerate() {
            if let Some(p) = profilers.get_mut(col + i % width) {
                p.push_f64(v);
            }
        }
        col += width;
    }
}

fn validate(engine: &mut dyn Engine, csv_path: &Path, label: &str, task: Option<Task>) -> anyhow::Result<Validation> {
    let signature = engine.signature().clone();
    let outputs = ferry_package::PredictionOutputs::of(&signature, task).map_err(anyhow::Error::msg)?;
    let (task, pred_name, proba_name) = (outputs.task, outputs.predicted, outputs.probabilities);
    let mut csv = CsvBatches::open(csv_path, "validating")?;
    let layout =
        FeatureLayout::new(&signature, &csv.headers, Some(label)).with_context(|| csv_path.display().to_string())?;
    let label_col = layout.label.context("no label column")?;
    let (mut y_true, mut y_pred, mut proba, mut width) = (Vec::new(), Vec::new(), Vec::new(), 0usize);
    while let Some((batch, line)) = csv.next_batch()? {
        for (i, row) in batch.iter().enumerate() {
            let cell = row.get(label_col).unwrap_or("").trim();
            let v: f64 = cell.parse().map_err(|_| {
                anyhow::anyhow!("{} line {}: label {cell:?} is not a number", csv_path.display(), line + i as u64)
            })?;
            y_true.push(v);
        }
        let tensors = layout.tensors(&batch, &csv.headers, line).with_context(|| csv_path.display().to_string())?;
        let out = run_model(engine, &tensors, line)?;
        let find = |n: &str| out.iter().find(|o| o.name == n).with_context(|| format!("the model returned no {n:?}"));
        y_pred.extend(as_f64(find(&pred_name)?));
        if let Some(p) = &proba_name {
            let t = find(p)?;
            width = row_width(t);
            proba.extend(as_f64(t));
        }
    }
    csv.finish()?;
    let metrics = match task {
        Task::Regression => ferry_monitor::regression_metrics(&y_true, &y_pred)?,
        Task::Classification => {
            let to_class = |v: &f64| -> anyhow::Result<i64> {
                if v.fract() != 0.0 {
                    bail!("classification labels must be integer class ids; got {v}");
                }
                #[expect(clippy::cast_possible_truncation, reason = "checked to be a whole number")]
                Ok(*v as i64)
            };
            let truth: Vec<i64> = y_true.iter().map(to_class).collect::<anyhow::Result<_>>()?;
            let pred: Vec<i64> = y_pred.iter().map(to_class).collect::<anyhow::Result<_>>()?;
            // Probability column j belongs to class j: scikit-learn exports order classes ascending, and ids 0..k-1.
            let probabilities = (width > 1).then(|| ferry_monitor::Probabilities {
                classes: (0..i64::try_from(width).unwrap_or(0)).collect(),
                values: proba.clone(),
            });
            ferry_monitor::classification_metrics(&truth, &pred, probabilities.as_ref())?
        }
    };
    Ok(Validation { label: label.to_owned(), rows: y_true.len() as u64, task, metrics })
}

fn format_metrics(metrics: &BTreeMap<String, f64>) -> String {
    metrics.iter().map(|(k, v)| format!("{k}={v:.4}")).collect::<Vec<_>>().join(" ")
}

fn read_secret_key(path: &Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ferry_package::parse_secret_key(&text).with_context(|| path.display().to_string())
}

/// `ferry keygen -o NAME`
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Writes NAME.key (secret, mode 600) and NAME.pub.
    #[arg(short, long, value_name = "NAME")]
    pub output: PathBuf,
}

pub fn run_keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let (secret, public) = ferry_package::generate_keypair()?;
    let (secret_path, public_path) = (args.output.with_extension("key"), args.output.with_extension("pub"));
    if secret_path.exists() {
        bail!("{} exists; refusing to overwrite a key", secret_path.display());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&secret_path).with_context(|| format!("cannot create {}", secret_path.display()))?;
    std::io::Write::write_all(&mut file, secret.as_bytes())?;
    std::fs::write(&public_path, &public).with_context(|| format!("cannot write {}", public_path.display()))?;
    println!(
        "{} (secret: keep it safe) and {} (public: give it to servers as a trusted signer)",
        secret_path.display(),
        public_path.display()
    );
    Ok(())
}

/// `ferry sign PKG --key KEY`
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The package to sign (in place).
    #[arg(value_name = "PKG.ferry")]
    pub package: PathBuf,
    /// The secret key file.
    #[arg(long, value_name = "KEY_FILE")]
    pub key: PathBuf,
}

pub fn run_sign(args: SignArgs) -> anyhow::Result<()> {
    let key = read_secret_key(&args.key)?;
    ferry_package::verify(&args.package, None, &|_| {})
        .with_context(|| format!("{} is not a valid package", args.package.display()))?;
    let sig = ferry_package::sign_package(&args.package, &key)?;
    println!("{} signed by {}", args.package.display(), sig.public_key);
    Ok(())
}

/// `ferry inspect PKG`
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The package.
    #[arg(value_name = "PKG.ferry")]
    pub package: PathBuf,
    /// Print the manifest and profile as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run_inspect(args: InspectArgs) -> anyhow::Result<()> {
    let manifest = ferry_package::open_manifest(&args.package)?;
    let profile: Option<Profile> = match manifest.file(PROFILE_PATH) {
        Some(_) => Some(serde_json::from_slice(&read_small_file(&args.package, PROFILE_PATH, 512 << 20)?)?),
        None => None,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"manifest": manifest, "profile": profile}))?);
        return Ok(());
    }
    let m = &manifest;
    println!("{} (format {})", m.name, m.format_version);
    for (k, v) in [("description", &m.description), ("owner", &m.owner), ("created", &m.created_at)] {
        if !v.is_empty() {
            println!("  {k:<12} {v}");
        }
    }
    if !m.tags.is_empty() {
        println!("  {:<12} {}", "tags", m.tags.join(", "));
    }
    for (k, v) in &m.metadata {
        println!("  {:<12} {k} = {v}", "meta");
    }
    let opsets: Vec<String> = m.framework.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
    println!(
        "  {:<12} {} {} (IR {}, opsets {}); {}",
        "producer",
        m.framework.producer,
        m.framework.producer_version,
        m.framework.ir_version,
        opsets.join(", "),
        m.framework.packed_by
    );
    if let Some(p) = &m.lineage.parent {
        println!("  {:<12} {p}", "parent");
    }
    if let Some(d) = &m.lineage.training_data {
        println!("  {:<12} sha256:{d}", "training");
    }
    if let Some(c) = &m.lineage.source_commit {
        println!("  {:<12} {c}", "commit");
    }
    println!("signature");
    for (kind, specs) in [("input", &m.signature.inputs), ("output", &m.signature.outputs)] {
        for s in specs {
            println!("  {kind:<7} {:<24} {:<6} {:?}", s.name, s.datatype.as_str(), s.shape);
        }
    }
    println!("files");
    for f in &m.files {
        println!("  {:<16} {:>12} bytes  sha256:{}", f.path, f.size, f.sha256);
    }
    if let Some(v) = &m.validation {
        println!("validation ({:?}, {} rows, label {:?})", v.task, v.rows, v.label);
        for (k, x) in &v.metrics {
            println!("  {k:<12} {x:.6}");
        }
    }
    if let Some(p) = profile {
        println!("reference profile ({} rows)", p.rows);
        let mut table = crate::table::new(&["column", "kind", "count", "missing", "mean", "std", "min", "max"]);
        for c in p.features.iter().chain(&p.outputs) {
            table.add_row(profile_row(c));
        }
        println!("{table}");
    }
    Ok(())
}

fn profile_row(c: &ColumnProfile) -> Vec<String> {
    let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.4}"));
    let kind = match c.kind {
        ColumnKind::Numerical => "numerical".to_owned(),
        ColumnKind::Categorical => format!("categorical ({})", c.categories.as_ref().map_or(0, BTreeMap::len)),
    };
    vec![c.name.clone(), kind, c.count.to_string(), c.missing.to_string(), f(c.mean), f(c.std), f(c.min), f(c.max)]
}

/// `ferry verify PKG`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The package.
    #[arg(value_name = "PKG.ferry")]
    pub package: PathBuf,
    /// Path of libonnxruntime.so [env: FERRY_ONNXRUNTIME_LIB].
    #[arg(long, value_name = "FILE", env = "FERRY_ONNXRUNTIME_LIB")]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Require a valid signature by this public key (repeatable: any of them).
    #[arg(long = "trusted-key", value_name = "PUB_FILE")]
    pub trusted_keys: Vec<PathBuf>,
}

pub fn run_verify(args: VerifyArgs) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let bar = progress::bytes("verifying", file_len(&args.package)?);
    let contents = verify(&args.package, Some(dir.path()), &|n| bar.set_position(n))
        .with_context(|| format!("{} failed verification", args.package.display()))?;
    bar.finish_and_clear();
    let signature = ferry_package::check_signature(&args.package)
        .with_context(|| format!("{} failed verification", args.package.display()))?;
    let mut trusted = Vec::new();
    for path in &args.trusted_keys {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        trusted.push(hex::encode(ferry_package::parse_public_key(&text)?.as_bytes()));
    }
    let signed_by = match (&signature, trusted.is_empty()) {
        (Some(sig), true) => format!("signed by {}", sig.public_key),
        (Some(sig), false) if trusted.contains(&sig.public_key) => format!("signed by trusted key {}", sig.public_key),
        (Some(sig), false) => {
            bail!("{}: signed by {}, which is not a trusted key", args.package.display(), sig.public_key)
        }
        (None, true) => "unsigned".to_owned(),
        (None, false) => bail!("{}: not signed, and a trusted signature was required", args.package.display()),
    };
    let settings = EngineSettings { onnxruntime_lib: args.onnxruntime_lib, ..EngineSettings::default() };
    let (engine, kind) = open_engine(&dir.path().join(MODEL_PATH), EngineChoice::Auto, &settings)
        .context("the package's model does not load")?;
    if let Some(why) = signature_mismatch(&contents.manifest.signature, engine.signature()) {
        bail!("{}: the manifest does not describe the model: {why}", args.package.display());
    }
    println!(
        "{}: ok — {} files match their SHA-256, the signature matches the model ({}), {signed_by}; package sha256:{}",
        args.package.display(),
        contents.manifest.files.len(),
        kind.name(),
        contents.digest
    );
    Ok(())
}

/// Reads a file while hashing it and advancing a progress bar.
struct HashingReader {
    file: std::fs::File,
    hasher: Sha256,
    read: u64,
    bar: indicatif::ProgressBar,
}

impl HashingReader {
    fn new(file: std::fs::File, bar: indicatif::ProgressBar) -> Self {
        Self { file, hasher: Sha256::new(), read: 0, bar }
    }

    fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        self.bar.set_position(self.read);
        Ok(n)
    }
}

/// A scratch directory removed on drop.
fn tempfile_dir() -> anyhow::Result<TempDir> {
    let path = std::env::temp_dir().join(format!("ferry-verify-{}-{}", std::process::id(), nanos()));
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(TempDir(path))
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        drop(std::fs::remove_dir_all(&self.0));
    }
}
