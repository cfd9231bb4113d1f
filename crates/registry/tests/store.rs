//! One store suite, run against SQLite and against a real PostgreSQL (a database created and dropped per test).

use std::time::Duration;

use bytes::Bytes;
use ferry_package::{FORMAT_VERSION, Framework, Lineage, Manifest, PackageInput, write_package};
use ferry_registry::testing::TempPostgres;
use ferry_registry::{AliasUpdate, ArtifactStore, Registry, RegistryError, Selector};
use ferry_types::{ModelName, ModelSignature};

struct Env {
    registry: Registry,
    dir: tempfile::TempDir,
    _pg: Option<TempPostgres>,
}

async fn sqlite() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let artifacts = ArtifactStore::local(&dir.path().join("artifacts"), &dir.path().join("staging")).expect("store");
    let registry =
        Registry::open(&Registry::sqlite_url(&dir.path().join("registry.db")), artifacts).await.expect("open");
    Env { registry, dir, _pg: None }
}

async fn postgres() -> Env {
    let pg = TempPostgres::create().await.expect("PostgreSQL must be running for these tests");
    let dir = tempfile::tempdir().expect("tempdir");
    let artifacts = ArtifactStore::local(&dir.path().join("artifacts"), &dir.path().join("staging")).expect("store");
    let registry = Registry::open(&pg.url, artifacts).await.expect("open");
    Env { registry, dir, _pg: Some(pg) }
}

/// A real package of the fixture model, distinguished by `tag` so that each has its own digest.
fn package(env: &Env, name: &str, tag: &str) -> Bytes {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/tiny_add.onnx");
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name: ModelName::new(name).expect("name"),
        description: format!("{name} {tag}"),
        owner: "tests".into(),
        tags: vec![tag.into()],
        metadata: Default::default(),
        framework: Framework::default(),
        signature: ModelSignature { inputs: vec![], outputs: vec![] },
        created_at: "2026-01-01T00:00:00Z".into(),
        files: vec![],
        lineage: Lineage::default(),
        features: vec![],
        validation: None,
    };
    let out = env.dir.path().join(format!("{name}-{tag}.ferry"));
    write_package(PackageInput { manifest, model: &model, profile: None, validation: None }, &out, &|_| {})
        .expect("pack");
    Bytes::from(std::fs::read(out).expect("read"))
}

async fn publish(env: &Env, name: &str, bytes: Bytes) -> Result<u64, RegistryError> {
    let body = futures::stream::iter(
        bytes.chunks(1000).map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
    );
    let name = ModelName::new(name).expect("name");
    env.registry.publish(&name, body, 10 << 20, "tester", |_, _, _| Ok(())).await.map(|v| v.version)
}

async fn versions_are_monotonic_and_never_reused(env: Env) {
    assert_eq!(publish(&env, "m", package(&env, "m", "a")).await.expect("v1"), 1);
    assert_eq!(publish(&env, "m", package(&env, "m", "b")).await.expect("v2"), 2);
    env.registry.delete_version("m", 2, "tester").await.expect("delete v2");
    assert_eq!(publish(&env, "m", package(&env, "m", "c")).await.expect("v3"), 3, "2 is never handed out again");
    let err = publish(&env, "m", package(&env, "m", "a")).await.expect_err("same package twice");
    assert!(matches!(err, RegistryError::Conflict(ref m) if m.contains("already version 1")), "{err}");
    let versions: Vec<u64> = env.registry.list_versions("m").await.expect("list").iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![1, 3]);
    let model = env.registry.get_model("m").await.expect("model");
    assert_eq!((model.latest_version, model.versions, model.owner.as_str()), (Some(3), 2, "tests"));
    let events: Vec<String> = env.registry.events("m").await.expect("events").into_iter().map(|e| e.action).collect();
    assert_eq!(events, vec!["register", "register", "delete_version", "register"]);
}

async fn aliases_point_move_and_guard_versions(env: Env) {
    publish(&env, "m", package(&env, "m", "a")).await.expect("v1");
    publish(&env, "m", package(&env, "m", "b")).await.expect("v2");
    let set = env.registry.set_alias("m", "production", 1, AliasUpdate::Always, "alice").await.expect("alias");
    assert_eq!((set.version, set.previous), (1, None));
    let moved = env.registry.set_alias("m", "production", 2, AliasUpdate::Always, "bob").await.expect("move");
    assert_eq!(moved.previous, Some(1));
    assert_eq!(env.registry.resolve("m", &Selector::Alias("production".into())).await.expect("resolve").version, 2);
    assert_eq!(env.registry.resolve("m", &Selector::Latest).await.expect("latest").version, 2);
    let err = env.registry.delete_version("m", 2, "eve").await.expect_err("aliased");
    assert!(matches!(err, RegistryError::Conflict(ref m) if m.contains("production")), "{err}");
    // Compare-and-set: a stale expectation loses.
    let err =
        env.registry.set_alias("m", "production", 1, AliasUpdate::IfVersion(1), "carol").await.expect_err("stale");
    assert!(matches!(err, RegistryError::Conflict(ref m) if m.contains("points at version 2")), "{err}");
    env.registry.set_alias("m", "production", 1, AliasUpdate::IfVersion(2), "carol").await.expect("fresh");
    let err = env.registry.set_alias("m", "production", 2, AliasUpdate::CreateOnly, "dave").await.expect_err("exists");
    assert!(matches!(err, RegistryError::Conflict(_)), "{err}");
    assert!(matches!(
        env.registry.set_alias("m", "x", 9, AliasUpdate::Always, "a").await,
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        env.registry.set_alias("m", "../x", 1, AliasUpdate::Always, "a").await,
        Err(RegistryError::Invalid(_))
    ));
    assert!(matches!(
        env.registry.set_alias("m", "42", 1, AliasUpdate::Always, "a").await,
        Err(RegistryError::Invalid(_))
    ));
    env.registry.delete_alias("m", "production", "carol").await.expect("delete alias");
    env.registry.delete_version("m", 2, "carol").await.expect("now deletable");
    assert!(matches!(
        env.registry.resolve("m", &Selector::Alias("production".into())).await,
        Err(RegistryError::NotFound(_))
    ));
}

async fn racing_alias_creations_have_one_winner(env: Env) {
    publish(&env, "m", package(&env, "m", "a")).await.expect("v1");
    publish(&env, "m", package(&env, "m", "b")).await.expect("v2");
    let (a, b) = tokio::join!(
        env.registry.set_alias("m", "staging", 1, AliasUpdate::CreateOnly, "a"),
        env.registry.set_alias("m", "staging", 2, AliasUpdate::CreateOnly, "b"),
    );
    assert!(a.is_ok() != b.is_ok(), "exactly one creation wins: {a:?} {b:?}");
    let loser = if a.is_ok() { &b } else { &a };
    assert!(matches!(loser, Err(RegistryError::Conflict(_))), "the loser is told it lost, not a 500: {loser:?}");
    let winner = if a.is_ok() { 1 } else { 2 };
    assert_eq!(env.registry.aliases_of("m").await.expect("aliases").get("staging"), Some(&winner));
}

async fn bad_uploads_leave_nothing(env: Env) {
    let good = package(&env, "m", "a");
    // Truncated.
    let cut = good.slice(..good.len() / 2);
    assert!(matches!(publish(&env, "m", cut).await, Err(RegistryError::Invalid(_))));
    // Uploaded under another name.
    let err = publish(&env, "other", good.clone()).await.expect_err("wrong name");
    assert!(matches!(err, RegistryError::Invalid(ref m) if m.contains("uploaded as")), "{err}");
    // Over the limit.
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(good.clone())]);
    let err = env.registry.publish(&ModelName::new("m").expect("n"), body, 100, "t", |_, _, _| Ok(())).await;
    assert!(matches!(err, Err(RegistryError::TooLarge { limit: 100 })));
    // Refused by the check (the server checks the model's real signature there).
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(good.clone())]);
    let err = env
        .registry
        .publish(&ModelName::new("m").expect("n"), body, 10 << 20, "t", |_, _, _| Err("signature lies".into()))
        .await;
    assert!(matches!(err, Err(RegistryError::Invalid(ref m)) if m.contains("signature lies")));
    assert!(env.registry.list_models().await.expect("list").is_empty(), "no model was created");
    let staged = std::fs::read_dir(env.dir.path().join("staging")).expect("staging").count();
    assert_eq!(staged, 0, "staging is empty");
    let (_, blobs) = env.registry.clean_orphans(Duration::ZERO).await.expect("clean");
    assert_eq!(blobs, 0, "no blob was stored for a refused upload");
}

async fn orphaned_blobs_are_cleaned_and_registered_ones_kept(env: Env) {
    publish(&env, "m", package(&env, "m", "a")).await.expect("v1");
    let orphan = env.dir.path().join("artifacts/sha256").join(format!("{}.ferry", "0".repeat(64)));
    std::fs::write(&orphan, b"left by a crash").expect("orphan");
    std::fs::write(env.dir.path().join("staging/123-abc.upload"), b"half").expect("staged");
    let orphan_key = env.dir.path().join("artifacts/sha256").join(format!("{}.key", "1".repeat(64)));
    let half_sealed = env.dir.path().join("artifacts/sha256").join(format!("{}.encrypting", "2".repeat(64)));
    std::fs::write(&orphan_key, b"{}").expect("orphan key");
    std::fs::write(&half_sealed, b"half").expect("half sealed");
    let (staged, blobs) = env.registry.clean_orphans(Duration::ZERO).await.expect("clean");
    assert_eq!((staged, blobs), (1, 1));
    assert!(!orphan.exists());
    assert!(!orphan_key.exists() && !half_sealed.exists(), "key files without a package and half-sealed copies go");
    let v = env.registry.resolve("m", &Selector::Version(1)).await.expect("v1");
    let target = env.dir.path().join("pulled.ferry");
    env.registry.artifacts().download_to(&v.digest, &target).await.expect("download");
    assert_eq!(ferry_package::sha256_file(&target, &|_| {}).expect("hash").0, v.digest);
    env.registry.delete_model("m", "t").await.expect("delete model");
    assert!(env.registry.list_models().await.expect("list").is_empty());
    assert!(matches!(env.registry.artifacts().download_to(&v.digest, &target).await, Err(RegistryError::NotFound(_))));
}

async fn feedback_joins_kept_predictions_and_expires_them(env: Env) {
    use ferry_registry::{Outcome, Truth};
    let outcome = |id: &str, row: u64, at: i64, predicted: f64| Outcome {
        model: "m".into(),
        request_id: id.into(),
        row,
        version: 2,
        at,
        predicted,
        proba: Some(vec![0.25, 0.75]),
    };
    let r = &env.registry;
    // Kept predictions name a version the registry holds.
    for tag in ["one", "two"] {
        publish(&env, "m", package(&env, "m", tag)).await.expect("publish");
    }
    r.insert_outcomes(&[outcome("a", 0, 1_000, 1.0), outcome("a", 1, 1_000, 0.0), outcome("b", 0, 5_000, 1.0)])
        .await
        .expect("insert");
    // A repeated id keeps the first prediction: a client reusing ids cannot replace one (or erase its truth).
    assert_eq!(r.insert_outcomes(&[outcome("b", 0, 6_000, 0.0)]).await.expect("re-insert"), 0);
    let truth = |id: &str, row: u64, truth: f64| Truth { request_id: id.into(), row, truth, at: 9_000 };
    let joined = r
        .join_truth("m", &[truth("a", 1, 1.0), truth("zzz", 0, 1.0), truth("b", 0, 0.0), truth("a", 7, 1.0)])
        .await
        .expect("join");
    let matched: Vec<bool> = joined.iter().map(Option::is_some).collect();
    assert_eq!(matched, [true, false, true, false], "unknown ids and rows are unmatched, not errors");
    let a1 = joined[0].clone().expect("a/1");
    assert_eq!((a1.version, a1.predicted, a1.truth, a1.first), (2, 0.0, 1.0, true));
    let again = r.join_truth("m", &[truth("a", 1, 0.0)]).await.expect("resend");
    assert_eq!(again[0].as_ref().map(|l| (l.first, l.truth)), Some((false, 0.0)), "a correction, not a new pair");
    assert_eq!(a1.proba, Some(vec![0.25, 0.75]));
    assert!(r.join_truth("other", &[truth("a", 1, 1.0)]).await.expect("join")[0].is_none(), "per model");

    let labelled = r.labelled_outcomes("m", 0).await.expect("labelled");
    assert_eq!(labelled.len(), 2, "only predictions with their truth: {labelled:?}");
    assert_eq!(labelled.iter().map(|l| l.at).collect::<Vec<_>>(), [1_000, 5_000], "oldest first");
    assert_eq!(r.labelled_outcomes("m", 2_000).await.expect("window").len(), 1, "the window starts at `since`");

    assert_eq!(r.expire_outcomes(2_000).await.expect("expire"), 2, "both rows of request a");
    assert!(r.join_truth("m", &[truth("a", 0, 1.0)]).await.expect("join")[0].is_none(), "expired");

    // Regression predictions come back bit for bit through the batch's JSON (the shortest round-trip decimal).
    let tricky = [0.1 + 0.2, 1e-300, f64::MAX, -1.234_567_890_123_456_7e-7, 2.0_f64.sqrt() * 1e15, 0.3];
    let rows: Vec<Outcome> = tricky
        .iter()
        .enumerate()
        .map(|(i, &p)| Outcome { proba: None, ..outcome("exact", i as u64, 1_000, p) })
        .collect();
    r.insert_outcomes(&rows).await.expect("insert");
    let items: Vec<Truth> = (0..tricky.len() as u64).map(|i| truth("exact", i, 0.0)).collect();
    let back: Vec<f64> =
        r.join_truth("m", &items).await.expect("join").into_iter().map(|l| l.expect("kept").predicted).collect();
    assert_eq!(
        back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        tricky.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

async fn deployments_are_revised_recorded_and_removed_with_their_model(env: Env) {
    publish(&env, "m", package(&env, "m", "a")).await.expect("v1");
    let r = &env.registry;
    assert_eq!(r.deployment("m").await.expect("read"), None);
    let first = r.set_deployment("m", r#"{"variants":[]}"#, "first", "alice").await.expect("set");
    assert_eq!((first.revision, first.updated_by.as_str()), (1, "alice"));
    let second = r.set_deployment("m", r#"{"variants":[1]}"#, "second", "bob").await.expect("revise");
    assert_eq!((second.revision, second.spec.as_str()), (2, r#"{"variants":[1]}"#));
    assert_eq!(r.deployment("m").await.expect("read"), Some(second.clone()));
    assert_eq!(r.deployments().await.expect("all"), vec![second]);
    assert!(matches!(r.set_deployment("nope", "{}", "", "a").await, Err(RegistryError::NotFound(_))));
    let events: Vec<(String, String)> =
        r.events("m").await.expect("events").into_iter().map(|e| (e.action, e.detail)).collect();
    assert!(events.contains(&("set_deployment".into(), "second".into())), "{events:?}");
    r.delete_deployment("m", "carol").await.expect("delete");
    assert!(matches!(r.delete_deployment("m", "carol").await, Err(RegistryError::NotFound(_))));
    r.set_deployment("m", "{}", "again", "alice").await.expect("set again");

    // Rollouts: begun by one start of two racing, stored, listed, and claimed by one judge at a time.
    assert!(
        r.store_rollout_if("m", None, r#"{"start":"a"}"#, "", "alice").await.expect("begin"),
        "the first start wins"
    );
    assert!(
        !r.store_rollout_if("m", None, r#"{"start":"b"}"#, "", "bob").await.expect("begin"),
        "a second start loses"
    );
    let (state, at) = r.rollout_record("m").await.expect("read").expect("stored");
    assert_eq!(state, r#"{"start":"a"}"#);
    assert!(
        r.store_rollout_if("m", Some(at), r#"{"start":"c"}"#, "", "carol").await.expect("begin"),
        "over what it read"
    );
    assert!(
        !r.store_rollout_if("m", Some(at), r#"{"start":"d"}"#, "", "dan").await.expect("begin"),
        "stale read loses"
    );
    r.set_rollout("m", r#"{"step":0}"#, "started", "alice").await.expect("rollout");
    let [(model, state, seen)] = &r.rollouts().await.expect("rollouts")[..] else { panic!("one rollout") };
    assert_eq!((model.as_str(), state.as_str()), ("m", r#"{"step":0}"#));
    assert!(r.claim_rollout("m", *seen, r#"{"step":1}"#).await.expect("claim").is_some(), "the first claim wins");
    assert!(r.claim_rollout("m", *seen, r#"{"step":2}"#).await.expect("claim").is_none(), "a second claim loses");
    assert_eq!(r.rollout("m").await.expect("read").as_deref(), Some(r#"{"step":1}"#), "the winner's state");
    assert!(matches!(r.set_rollout("nope", "{}", "", "a").await, Err(RegistryError::NotFound(_))));
    r.delete_model("m", "alice").await.expect("delete model");
    assert!(r.deployments().await.expect("all").is_empty());
    assert!(r.rollouts().await.expect("all").is_empty());
}

async fn replicas_publish_arm_counts_per_revision(env: Env) {
    publish(&env, "m", package(&env, "m", "a")).await.expect("v1");
    let r = &env.registry;
    r.publish_arm_counts("m", "a", 3, 100, &[(1, "a1".into()), (2, "a2".into())]).await.expect("publish a");
    r.publish_arm_counts("m", "b", 3, 90, &[(1, "b1".into())]).await.expect("publish b");
    // A replica publishing again replaces its rows.
    r.publish_arm_counts("m", "a", 3, 100, &[(1, "a1'".into()), (2, "a2'".into())]).await.expect("again");
    let rows = r.arm_counts("m", 3).await.expect("read");
    let seen = |rows: Vec<ferry_registry::PublishedCounts>| -> Vec<(String, u64, i64, String)> {
        rows.into_iter().map(|c| (c.replica, c.version, c.since_ms, c.totals)).collect()
    };
    let row = |replica: &str, version, since, totals: &str| (replica.to_owned(), version, since, totals.to_owned());
    assert_eq!(
        seen(rows),
        vec![row("a", 1, 100, "a1'"), row("a", 2, 100, "a2'"), row("b", 1, 90, "b1")],
        "every replica's latest rows of the revision"
    );
    // A newer revision: older revisions' rows go, whoever published them; a lagging replica's stay until it moves.
    r.publish_arm_counts("m", "b", 4, 200, &[(2, "b2".into())]).await.expect("publish b, revision 4");
    assert!(r.arm_counts("m", 3).await.expect("read").is_empty());
    assert_eq!(seen(r.arm_counts("m", 4).await.expect("read")), vec![row("b", 2, 200, "b2")]);
    r.delete_model("m", "alice").await.expect("delete model");
    assert!(r.arm_counts("m", 4).await.expect("read").is_empty(), "gone with the model");
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test] async fn $name() { super::$name(super::sqlite().await).await } )* }
        mod on_postgres { $( #[tokio::test] async fn $name() { super::$name(super::postgres().await).await } )* }
    };
}

on_both!(
    versions_are_monotonic_and_never_reused,
    aliases_point_move_and_guard_versions,
    racing_alias_creations_have_one_winner,
    bad_uploads_leave_nothing,
    orphaned_blobs_are_cleaned_and_registered_ones_kept,
    feedback_joins_kept_predictions_and_expires_them,
    deployments_are_revised_recorded_and_removed_with_their_model,
    replicas_publish_arm_counts_per_revision,
);

/// Replicas sharing PostgreSQL learn of a model's delete late and keep its predictions meanwhile: none of them may
/// outlive the delete, whether they arrive after it or while it runs.
#[tokio::test]
async fn on_postgres_kept_predictions_do_not_outlive_their_model() {
    use ferry_registry::{Outcome, Truth};
    use sqlx::Connection;
    let env = postgres().await;
    let r = &env.registry;
    publish(&env, "m", package(&env, "m", "one")).await.expect("publish");
    let outcome = |id: &str, version| Outcome {
        model: "m".into(),
        request_id: id.into(),
        row: 0,
        version,
        at: 1_000,
        predicted: 1.0,
        proba: None,
    };
    assert_eq!(r.insert_outcomes(&[outcome("a", 1), outcome("b", 9)]).await.expect("insert"), 1, "version 9 is none");
    // A delete under way, as `delete_model` runs it, up to its commit; another replica's insert meanwhile.
    let url = env._pg.as_ref().map(|pg| pg.url.clone()).expect("postgres");
    let mut deleting = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut tx = deleting.begin().await.expect("begin");
    for sql in [
        "DELETE FROM versions WHERE model = 'm'",
        "DELETE FROM models WHERE name = 'm'",
        "DELETE FROM outcomes WHERE model = 'm'",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.expect(sql);
    }
    let other = r.clone();
    let insert = tokio::spawn(async move { other.insert_outcomes(&[outcome("c", 1)]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!insert.is_finished(), "the insert waits for the delete");
    tx.commit().await.expect("commit");
    assert_eq!(insert.await.expect("join").expect("insert"), 0, "the version is gone once the insert may go on");
    let truth = |id: &str| Truth { request_id: id.into(), row: 0, truth: 1.0, at: 2_000 };
    let joined = r.join_truth("m", &[truth("a"), truth("c")]).await.expect("join");
    assert!(joined.iter().all(Option::is_none), "nothing of the deleted model is kept: {joined:?}");
    // And after the delete, nothing is kept either.
    assert_eq!(r.insert_outcomes(&[outcome("d", 1)]).await.expect("insert"), 0);
}

#[tokio::test]
async fn a_first_rotation_encrypts_plaintext_packages_and_deletion_removes_their_keys() {
    let env = sqlite().await;
    publish(&env, "m", package(&env, "m", "a")).await.expect("v1");
    let digest = env.registry.resolve("m", &Selector::Version(1)).await.expect("v1").digest;
    let blobs = env.dir.path().join("artifacts/sha256");
    let plain = std::fs::read(blobs.join(format!("{digest}.ferry"))).expect("blob");

    let key = ferry_registry::MasterKey::generate().expect("key");
    let key_hex = key.to_hex().to_string();
    let report = env.registry.artifacts().rotate_master(None, &key).await.expect("encrypt");
    assert_eq!((report.encrypted, report.rewrapped, report.already), (1, 0, 0));
    let sealed = std::fs::read(blobs.join(format!("{digest}.ferry"))).expect("blob");
    assert_ne!(sealed, plain);
    assert!(blobs.join(format!("{digest}.key")).is_file());

    // Read through a store that has the key: the same package, hashing to its digest.
    let keyed = ArtifactStore::local(&env.dir.path().join("artifacts"), &env.dir.path().join("staging"))
        .expect("store")
        .with_master_key(Some(key));
    let target = env.dir.path().join("pulled.ferry");
    keyed.download_to(&digest, &target).await.expect("download");
    assert_eq!(std::fs::read(&target).expect("pulled"), plain);
    // The registry's own store has no key: a clear refusal, not garbage.
    let err = env.registry.artifacts().download_to(&digest, &target).await.expect_err("no key");
    assert!(matches!(err, RegistryError::Encryption(ref m) if m.contains("is encrypted")), "{err}");

    // A rotation interrupted after the key file was written but before the sealed blob moved in leaves the
    // plaintext under a key file: reading it fails clearly, and running the rotation again repairs it.
    std::fs::write(blobs.join(format!("{digest}.ferry")), &plain).expect("simulate the interruption");
    let err = keyed.download_to(&digest, &target).await.expect_err("unsealed blob");
    assert!(err.to_string().contains("not encrypted by ferry"), "{err}");
    let again_key = ferry_registry::MasterKey::from_hex(&key_hex).expect("key");
    let report = keyed.rotate_master(Some(&again_key), &again_key).await.expect("rerun");
    assert_eq!((report.encrypted, report.already), (1, 0));
    keyed.download_to(&digest, &target).await.expect("repaired");
    assert_eq!(std::fs::read(&target).expect("pulled"), plain);

    // The same package stored again while its blob is missing reuses the key file already there.
    std::fs::remove_file(blobs.join(format!("{digest}.ferry"))).expect("lose the blob");
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(plain.clone()))]);
    let staged = keyed.stage(body, 10 << 20).await.expect("stage");
    keyed.store(&staged).await.expect("store again");
    keyed.download_to(&digest, &target).await.expect("readable");
    assert_eq!(std::fs::read(&target).expect("pulled"), plain);

    // Mid-rotation, a server holding the new key and the old one as previous reads both generations and stores
    // new packages under the new key.
    let newer = ferry_registry::MasterKey::generate().expect("key");
    let both = ArtifactStore::local(&env.dir.path().join("artifacts"), &env.dir.path().join("staging"))
        .expect("store")
        .with_master_key(Some(newer.clone()))
        .with_previous_master_keys(vec![ferry_registry::MasterKey::from_hex(&key_hex).expect("key")]);
    both.download_to(&digest, &target).await.expect("read under the previous key");
    assert_eq!(std::fs::read(&target).expect("pulled"), plain);
    let only_new = ArtifactStore::local(&env.dir.path().join("artifacts"), &env.dir.path().join("staging"))
        .expect("store")
        .with_master_key(Some(newer.clone()));
    let err = only_new.download_to(&digest, &target).await.expect_err("without the previous key");
    assert!(err.to_string().contains("configured master key is"), "{err}");
    let report = both.rotate_master(Some(&again_key), &newer).await.expect("rotate");
    assert_eq!(report.rewrapped, 1);
    only_new.download_to(&digest, &target).await.expect("after rotation the new key alone reads it");

    env.registry.delete_model("m", "t").await.expect("delete");
    let left: Vec<_> =
        std::fs::read_dir(&blobs).expect("blobs").filter_map(Result::ok).map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the package and its key file are gone: {left:?}");
}

/// SQLite keeps predictions in a spool first (files beside the database): a join of ground truth finds them there,
/// whatever deletes them indexes the spool first, a new process picks up what an old one spooled, and a record cut
/// short by a crash is skipped without losing the records before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_predictions_are_indexed_on_demand_and_survive_a_restart_and_a_cut_record() {
    use ferry_registry::{Outcome, OutcomeRow, Truth};
    let env = sqlite().await;
    let spool_dir = env.dir.path().join("registry.db.kept-predictions");
    let reopen = || async {
        let artifacts =
            ArtifactStore::local(&env.dir.path().join("artifacts"), &env.dir.path().join("staging")).expect("store");
        Registry::open(&Registry::sqlite_url(&env.dir.path().join("registry.db")), artifacts).await.expect("reopen")
    };
    let spool = |r: &Registry, ids: &[&str], max_bytes: u64| {
        let owned: Vec<Outcome> = ids
            .iter()
            .map(|id| Outcome {
                model: "m".into(),
                request_id: (*id).into(),
                row: 0,
                version: 1,
                at: 1_000,
                predicted: 1.0,
                proba: Some(vec![0.25, 0.75]),
            })
            .collect();
        let rows: Vec<OutcomeRow<'_>> = owned.iter().map(Outcome::as_row).collect();
        r.spool_outcomes(&rows, max_bytes).expect("spool")
    };
    let joined = |r: &Registry, id: &str| {
        let (r, truth) = (r.clone(), Truth { request_id: id.into(), row: 0, truth: 1.0, at: 9 });
        async move { r.join_truth("m", &[truth]).await.expect("join").pop().flatten() }
    };
    // What the background indexer does, to its end.
    let index_all = |r: &Registry| {
        let r = r.clone();
        async move {
            tokio::task::spawn_blocking(move || while r.index_spooled_blocking(1_000).expect("index").1 {})
                .await
                .expect("indexer");
        }
    };
    let segments = || {
        let mut names: Vec<String> = std::fs::read_dir(&spool_dir)
            .expect("spool directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    assert_eq!(spool(&env.registry, &["a", "b"], 1 << 20).rows, 2);
    assert!(env.registry.spool_backlog_bytes() > 0);
    // No indexer runs here: the join finds "a" in the spool and indexes it alone.
    let a = joined(&env.registry, "a").await.expect("a was spooled");
    assert_eq!((a.version, a.at, a.proba), (1, 1_000, Some(vec![0.25, 0.75])));
    assert!(env.registry.spool_backlog_bytes() > 0, "the join indexed only what it named");
    index_all(&env.registry).await;
    assert_eq!(env.registry.spool_backlog_bytes(), 0);
    assert!(joined(&env.registry, "a").await.is_some_and(|a| !a.first), "joined once, its truth kept");
    // Appended to the segment still open after that pass: the next join finds it.
    spool(&env.registry, &["c"], 1 << 20);
    assert!(joined(&env.registry, "c").await.is_some());

    // A crash while writing: "d" whole, then a record cut short, then the process gone.
    spool(&env.registry, &["d"], 1 << 20);
    env.registry.close_spool();
    let [first] = segments().try_into().expect("one segment");
    let mut file = std::fs::OpenOptions::new().append(true).open(spool_dir.join(&first)).expect("segment");
    std::io::Write::write_all(&mut file, &[40, 0, 0, 0, 1, 2, 3, 4, 5, 6]).expect("cut record");
    drop(file);
    let restarted = reopen().await;
    assert!(joined(&restarted, "d").await.is_some(), "spooled by the old process, found by the new one");
    assert!(joined(&restarted, "b").await.is_some(), "indexed once, still there");

    // The new process appends to a segment of its own; the old one goes once it is wholly indexed.
    spool(&restarted, &["e"], 1 << 20);
    assert_eq!(segments().len(), 2);
    assert!(joined(&restarted, "e").await.is_some());
    assert_eq!(segments().len(), 2, "a join does not move the indexer");
    index_all(&restarted).await;
    let left = segments();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_ne!(left[0], first);

    // Expired rows do not come back from the spool after another restart.
    assert_eq!(restarted.expire_outcomes(2_000).await.expect("expire"), 5);
    restarted.close_spool();
    let again = reopen().await;
    for id in ["a", "b", "c", "d", "e"] {
        assert!(joined(&again, id).await.is_none(), "{id} was expired and indexed once only");
    }

    // Deleting the model deletes its spooled predictions too.
    publish(&env, "m", package(&env, "m", "a")).await.expect("v1");
    spool(&again, &["f"], 1 << 20);
    env.registry.delete_model("m", "t").await.expect("delete");
    assert!(joined(&again, "f").await.is_none(), "deleted with its model");

    // The limit is on what waits to be indexed, not on the indexed start of the segment being appended to.
    index_all(&again).await; // a pass of this process's own
    assert_eq!(spool(&again, &["g"], 1).rows, 1, "nothing waits: room");
    let full = spool(&again, &["h", "i"], 1);
    assert_eq!((full.rows, full.dropped), (0, 2), "at its limit the spool drops and counts instead of growing");

    // The spool's directory lost (or the database restored without it): the position stored in the database is
    // past every new segment. New predictions are still indexed, and their segment is not removed under the writer.
    again.close_spool();
    std::fs::remove_dir_all(&spool_dir).expect("remove the spool");
    let fresh = reopen().await;
    spool(&fresh, &["j"], 1 << 20);
    assert!(joined(&fresh, "j").await.is_some(), "found despite the stale position");
    index_all(&fresh).await;
    spool(&fresh, &["k"], 1 << 20);
    assert!(joined(&fresh, "k").await.is_some(), "the segment being written was kept");
}
