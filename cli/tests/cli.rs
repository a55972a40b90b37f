//! The `corral` binary's commands, run as a newcomer would run them.

use corral_tests::TestDb;

fn corral(url: &str, args: &[&str]) -> (bool, String, String) {
    corral_tests::run_corral(env!("CARGO_BIN_EXE_corral"), url, args)
}

#[tokio::test]
async fn token_create_prints_a_working_token_as_its_last_line() {
    let db = TestDb::new().await;
    let (ok, stdout, stderr) = corral(
        &db.url,
        &["token", "create", "--subject", "ci-bot", "--role", "viewer"],
    );
    assert!(ok, "{stderr}");
    let token = stdout.lines().last().expect("a line");
    assert!(token.starts_with("crl_"), "{stdout}");
    let pool = db.pool(1).await;
    let found = corral_api::auth::lookup(&pool, token)
        .await
        .expect("lookup");
    assert_eq!(found, Some(("ci-bot".to_string(), "viewer".to_string())));
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE token_hash = sha256($1::bytea)")
            .bind(token.as_bytes())
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(stored, 1, "only the hash is stored");
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%'",
    )
    .bind(token)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(plain, 0);

    let (ok, _, stderr) = corral(
        &db.url,
        &["token", "create", "--subject", "x", "--role", "root"],
    );
    assert!(!ok);
    assert!(stderr.contains("unknown role"), "{stderr}");
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn migrate_status_rebuild_and_schema() {
    let db = TestDb::new().await;
    let (ok, stdout, stderr) = corral(&db.url, &["migrate"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("migrations applied"));
    let (ok, stdout, stderr) = corral(&db.url, &["projections", "rebuild", "group_tree"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("rebuilt group_tree"), "{stdout}");
    let (ok, stdout, stderr) = corral(&db.url, &["projections", "status"]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("PROJECTOR"), "{stdout}");
    assert!(stdout.contains("group_tree"), "{stdout}");
    let (ok, _, stderr) = corral(&db.url, &["projections", "rebuild", "nope"]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown projection") && stderr.contains("group_tree"),
        "{stderr}"
    );
    let (ok, _, stderr) = corral(&db.url, &["projections", "rebuild", "sequencer"]);
    assert!(!ok);
    assert!(stderr.contains("cannot be rebuilt"), "{stderr}");
    let (ok, stdout, _) = corral(&db.url, &["schema"]);
    assert!(ok);
    assert_eq!(stdout, include_str!("../../docs/schema.graphql"));
    db.drop_db().await;
}
