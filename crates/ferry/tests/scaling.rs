//! Instances that follow the load, scale to zero, restart on demand within a memory budget, and memory that really
//! goes back to the system: a real `ferry serve` process, its `/metrics`, and its resident set read from `/proc`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_test_support::{
    FerryProcess, TEST_ADMIN_KEY, http_request, http_request_as, matmul_model, resident_bytes_of,
};

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

/// Weights of one test model: 2048 × 2048 floats, 16 MiB.
const WIDTH: usize = 2048;
const MODEL_BYTES: u64 = (WIDTH * WIDTH * 4) as u64;

/// A model repository of `names`, each a distinct `matmul_model` with `config` as its `config.toml`.
fn repository(names: &[String], config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, name) in names.iter().enumerate() {
        let version = dir.path().join(name).join("1");
        std::fs::create_dir_all(&version).expect("mkdir");
        std::fs::write(version.join("model.onnx"), matmul_model(WIDTH, WIDTH, i as u64 + 1)).expect("model");
        std::fs::write(dir.path().join(name).join("config.toml"), config).expect("config");
    }
    dir
}

fn serve(repo: &tempfile::TempDir, extra: &[&str]) -> FerryProcess {
    let mut args = vec!["--model-repository", repo.path().to_str().expect("utf8")];
    args.extend_from_slice(extra);
    FerryProcess::start(ferry(), &args).expect("ferry serves the repository")
}

fn infer_body() -> String {
    let row: Vec<String> = (0..WIDTH).map(|i| format!("{:.3}", (i % 7) as f32 * 0.1)).collect();
    format!(r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1,{WIDTH}],"data":[{}]}}]}}"#, row.join(","))
}

/// The value of the sample `name{labels}` in a Prometheus exposition (labels as written, in order).
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

fn metrics(server: &FerryProcess) -> String {
    let (status, body) = http_request_as(&server.addr, Some(TEST_ADMIN_KEY), "GET", "/metrics", None).expect("metrics");
    assert_eq!(status, 200);
    body
}

fn instances(server: &FerryProcess, model: &str) -> usize {
    sample(&metrics(server), "ferry_model_instances", &format!("model=\"{model}\",version=\"1\"")).unwrap_or(-1.0)
        as usize
}

/// Polls `done` every 100 ms for at most `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Instances running over every model, as `/metrics` says.
fn running_instances(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("ferry_model_instances{")?.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn memory_goes_back_to_the_system_after_twenty_models_load_and_unload() {
    let names: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    let repo = repository(&names, "min_instances = 0\nidle_unload_seconds = 3\n");
    let server = serve(&repo, &[]);
    // One scrape per look: the scrapes' own allocations are part of the resident set this test watches.
    let all_stopped = || running_instances(&metrics(&server)) == 0.0;
    // Every model loaded one instance at start (to prove it runs), then stopped it after a second without requests.
    wait_until(Duration::from_secs(60), "all 20 models scaling to zero", all_stopped);
    std::thread::sleep(Duration::from_millis(500));
    let before = resident_bytes_of(server.pid()).expect("rss");

    // Cold starts: the first request to each model starts an instance and waits for it.
    let body = infer_body();
    for name in &names {
        let (status, answer) =
            http_request(&server.addr, "POST", &format!("/v2/models/{name}/infer"), Some(body.as_bytes()))
                .expect("infer");
        assert_eq!(status, 200, "{name}: {answer}");
        assert!(answer.contains(&format!("\"shape\":[1,{WIDTH}]")), "{answer}");
    }
    let text = metrics(&server);
    for name in &names {
        let labels = format!("model=\"{name}\",version=\"1\"");
        assert_eq!(sample(&text, "ferry_model_cold_starts_total", &labels), Some(1.0), "{name}");
        assert_eq!(sample(&text, "ferry_model_instance_start_seconds_count", &labels), Some(1.0), "{name}");
    }
    let loaded = resident_bytes_of(server.pid()).expect("rss");
    // On a busy machine the first models may have idled out again before the last one started: count those running.
    let running = running_instances(&metrics(&server));
    assert!(running >= 10.0, "most models are still running: {running}");
    let weights = running * MODEL_BYTES as f64;
    assert!(
        loaded as f64 >= before as f64 + 0.9 * weights,
        "{running} models of {} MiB each are in memory: {:.0} MiB → {:.0} MiB",
        MODEL_BYTES >> 20,
        before as f64 / MIB,
        loaded as f64 / MIB
    );
    wait_until(Duration::from_secs(30), "all 20 models idling back to zero", all_stopped);
    // Stopped instances leave between batches and are joined (and the heap trimmed) at the next autoscaler look, and
    // the runtime's idle blocking threads (with their allocator caches) end after 10 s; give a busy machine that long
    // and a little more, no longer.
    let settled = |limit: f64| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let rss = resident_bytes_of(server.pid()).expect("rss");
            if rss as f64 <= limit || Instant::now() > deadline {
                return rss;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The issue's target. It held in every run once glibc's thresholds were fixed (`allocator::configure_malloc`):
    // before that, freed weights at the top of a thread's glibc arena stayed resident in about 1 run in 3.
    let limit = 1.2 * before as f64;
    let idle = settled(limit);

    // The explicit way: load every model through the repository API, then unload it.
    for action in ["load", "unload"] {
        for name in &names {
            let path = format!("/v2/repository/models/{name}/{action}");
            let (status, answer) =
                http_request_as(&server.addr, Some(TEST_ADMIN_KEY), "POST", &path, Some(b"{}")).expect(action);
            assert_eq!(status, 200, "{action} {name}: {answer}");
        }
    }
    let after = settled(limit);
    eprintln!(
        "resident set: {:.1} MiB before, {:.1} MiB with 20 models, {:.1} MiB after they idled to zero, {:.1} MiB \
         after loading and unloading them",
        before as f64 / MIB,
        loaded as f64 / MIB,
        idle as f64 / MIB,
        after as f64 / MIB
    );
    for (when, rss) in [("after idling to zero", idle), ("after unloading", after)] {
        assert!(
            rss as f64 <= limit,
            "{when}: {:.1} MiB is more than 1.2 × the {:.1} MiB before; where it is:\n{}",
            rss as f64 / MIB,
            before as f64 / MIB,
            memory_map(server.pid())
        );
    }
}

#[test]
fn instances_scale_up_under_queue_pressure_and_back_down_when_it_ends() {
    let names = vec!["wide".to_owned()];
    let config = "max_instances = 2\ndynamic_batching = false\nscale_up_queue_depth = 2\n\
                  scale_up_queue_wait_microseconds = 500\nscale_up_cooldown_seconds = 0.2\n\
                  scale_down_cooldown_seconds = 1\n";
    let repo = repository(&names, config);
    let server = serve(&repo, &[]);
    assert_eq!(instances(&server, "wide"), 1);

    let body = infer_body();
    let (stop, failures, sent) = (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    let scaled_up = std::thread::scope(|s| {
        for _ in 0..12 {
            s.spawn(|| {
                let started = Instant::now();
                // Bounded in count and time.
                for _ in 0..5_000 {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                    let ok = http_request(&server.addr, "POST", "/v2/models/wide/infer", Some(body.as_bytes()))
                        .is_ok_and(|(status, _)| status == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let started = Instant::now();
        let mut seen = false;
        while started.elapsed() < Duration::from_secs(30) && !seen {
            std::thread::sleep(Duration::from_millis(100));
            seen = instances(&server, "wide") == 2;
        }
        // Keep the load a little longer: the second instance serves requests too.
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        seen
    });
    assert!(scaled_up, "12 concurrent clients never made a second instance start");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no request fails while instances start");
    assert!(sent.load(Ordering::Relaxed) > 0);
    wait_until(Duration::from_secs(20), "scaling back to one instance", || instances(&server, "wide") == 1);
    let text = metrics(&server);
    let labels = "model=\"wide\",version=\"1\"";
    assert!(sample(&text, "ferry_model_scale_events_total", &format!("{labels},direction=\"up\"")) >= Some(1.0));
    assert!(sample(&text, "ferry_model_scale_events_total", &format!("{labels},direction=\"down\"")) >= Some(1.0));
    // Never below min_instances (1) while idle.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(instances(&server, "wide"), 1);
}

#[test]
fn the_memory_budget_stops_the_least_recently_used_idle_model_to_make_room() {
    let names: Vec<String> = ["a", "b", "c"].iter().map(ToString::to_string).collect();
    let repo = repository(&names, "min_instances = 0\n");
    // First learn what one instance of each takes here (measured by the server at load) without a budget.
    let footprints: Vec<f64> = {
        let server = serve(&repo, &[]);
        let text = metrics(&server);
        names
            .iter()
            .map(|n| sample(&text, "ferry_model_memory_bytes", &format!("model=\"{n}\",version=\"1\"")).unwrap_or(0.0))
            .collect()
    };
    let smallest = footprints.iter().copied().fold(f64::MAX, f64::min);
    assert!(smallest >= MODEL_BYTES as f64, "an instance holds at least its weights: {footprints:?}");
    // Room for all three but half of the smallest: loading c must stop the least recently used one.
    let budget_mb = ((footprints.iter().sum::<f64>() - smallest / 2.0) / MIB).floor() as u64;
    let server = serve(&repo, &["--memory-budget-mb", &budget_mb.to_string()]);
    let state = || -> Vec<usize> { names.iter().map(|n| instances(&server, n)).collect() };
    assert_eq!(state(), vec![0, 1, 1], "loading c stopped a, loaded first and idle since");

    let (status, answer) =
        http_request(&server.addr, "POST", "/v2/models/a/infer", Some(infer_body().as_bytes())).expect("infer");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(state(), vec![1, 0, 1], "a's cold start stopped b, now the least recently used");
    let text = metrics(&server);
    let m = |name: &str, labels: &str| sample(&text, name, labels).unwrap_or(-1.0);
    assert_eq!(m("ferry_model_cold_starts_total", "model=\"a\",version=\"1\""), 1.0);
    assert_eq!(m("ferry_model_scale_events_total", "model=\"a\",version=\"1\",direction=\"evicted\""), 1.0);
    assert_eq!(m("ferry_model_scale_events_total", "model=\"b\",version=\"1\",direction=\"evicted\""), 1.0);
    assert_eq!(m("ferry_memory_budget_bytes", ""), (budget_mb << 20) as f64);
    assert!(m("ferry_memory_budget_used_bytes", "") <= (budget_mb << 20) as f64);
}

/// The process's threads and its largest resident mappings, to say where memory stayed when the test fails.
fn memory_map(pid: u32) -> String {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut mapping, mut regions) = (String::new(), Vec::new());
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Rss:") {
            let kib: u64 = kib.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
            regions.push((kib, mapping.clone()));
        } else if line.split_whitespace().next().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            mapping = line.to_owned();
        }
    }
    regions.sort_by_key(|r| std::cmp::Reverse(r.0));
    let small: u64 = regions.iter().filter(|r| r.0 < 1024).map(|r| r.0).sum();
    let mut out = format!("{threads} threads; {small} KiB in mappings under 1 MiB resident each\n");
    for (kib, m) in regions.iter().take(12) {
        out.push_str(&format!("{kib:>8} KiB  {m}\n"));
    }
    out
}
