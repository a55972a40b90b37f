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
        .expect("lookup")
        .expect("a valid token");
    assert_eq!(
        (found.subject.as_str(), found.roles.as_slice()),
        ("ci-bot", &["viewer".to_string()][..])
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM access_token_secrets WHERE token_hash = sha256($1::bytea)",
    )
    .bind(token.as_bytes())
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(stored, 1, "only the hash is stored");
    // The secret is nowhere in the log: not in the events, not in the secrets table.
    let plain: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM events WHERE payload::text LIKE '%' || $1 || '%'
                   OR metadata::text LIKE '%' || $1 || '%')
              + (SELECT count(*) FROM access_token_secrets
                  WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%')",
    )
    .bind(token)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(plain, 0);
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Subject' ORDER BY global_position",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    assert_eq!(events, ["SubjectCreated", "RoleGranted", "TokenCreated"]);

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

#[tokio::test]
async fn tokens_are_listed_revoked_by_prefix_and_expire() {
    let db = TestDb::new().await;
    let create = |subject: &str, extra: &[&str]| {
        let mut args = vec![
            "token",
            "create",
            "--subject",
            subject,
            "--role",
            "operator",
        ];
        args.extend_from_slice(extra);
        let (ok, stdout, stderr) = corral(&db.url, &args);
        assert!(ok, "{stderr}");
        stdout.lines().last().expect("a line").to_string()
    };
    let first = create("feeder", &[]);
    let second = create("feeder", &["--expires-in", "30d"]);
    let pool = db.pool(1).await;
    let (ok, stdout, stderr) = corral(&db.url, &["token", "list", "--subject", "feeder"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        3,
        "a header and two tokens:\n{stdout}"
    );
    assert!(
        stdout.contains(&first[..12]) && stdout.contains(&second[..12]),
        "{stdout}"
    );
    assert!(!stdout.contains(&first), "a listing never shows a secret");

    // Revoked by its prefix: it stops working and leaves the default listing.
    let (ok, stdout, stderr) = corral(
        &db.url,
        &["token", "revoke", &first[..12], "--reason", "rotated"],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("revoked token "), "{stdout}");
    assert!(corral_api::auth::lookup(&pool, &first)
        .await
        .expect("lookup")
        .is_none());
    assert!(corral_api::auth::lookup(&pool, &second)
        .await
        .expect("lookup")
        .is_some());
    let (_, stdout, _) = corral(&db.url, &["token", "list"]);
    assert!(!stdout.contains(&first[..12]), "{stdout}");
    let (_, stdout, _) = corral(&db.url, &["token", "list", "--all"]);
    assert!(stdout.contains("revoked"), "{stdout}");
    let reason: Option<String> = sqlx::query_scalar(
        "SELECT payload -> 'TokenRevoked' ->> 'reason' FROM events WHERE event_type = 'TokenRevoked'",
    )
    .fetch_one(&pool)
    .await
    .expect("reason");
    assert_eq!(reason.as_deref(), Some("rotated"));

    // Unknown tokens and bad lifetimes are refused with a reason.
    let (ok, _, stderr) = corral(&db.url, &["token", "revoke", "crl_00000000"]);
    assert!(!ok && stderr.contains("no token matches"), "{stderr}");
    let (ok, _, stderr) = corral(
        &db.url,
        &[
            "token",
            "create",
            "--subject",
            "x",
            "--role",
            "viewer",
            "--expires-in",
            "30",
        ],
    );
    assert!(!ok && stderr.contains("unit"), "{stderr}");

    // A token past its expiry stops working (the registry is checked at each request).
    sqlx::query(
        "UPDATE access_tokens SET expires_at = now() - interval '1 second' WHERE prefix = $1",
    )
    .bind(&second[..12])
    .execute(&pool)
    .await
    .expect("age");
    assert!(corral_api::auth::lookup(&pool, &second)
        .await
        .expect("lookup")
        .is_none());
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn tokens_of_the_old_table_become_events_and_keep_working() {
    let db = TestDb::new().await;
    let (ok, _, stderr) = corral(&db.url, &["migrate"]);
    assert!(ok, "{stderr}");
    let pool = db.pool(1).await;
    for (subject, role, secret, revoked) in [
        ("old-admin", "admin", "crl_legacy_one", false),
        ("old-viewer", "viewer", "crl_legacy_two", true),
    ] {
        sqlx::query(
            "INSERT INTO api_tokens (id, subject, role, token_hash, revoked_at)
             VALUES (gen_random_uuid(), $1, $2, sha256($3::bytea),
                     CASE WHEN $4 THEN now() END)",
        )
        .bind(subject)
        .bind(role)
        .bind(secret.as_bytes())
        .bind(revoked)
        .execute(&pool)
        .await
        .expect("legacy token");
    }
    let (ok, _, stderr) = corral(&db.url, &["token", "list"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("2 token(s) of the old api_tokens table"),
        "{stderr}"
    );
    let found = corral_api::auth::lookup(&pool, "crl_legacy_one")
        .await
        .expect("lookup")
        .expect("the old admin token still works");
    assert_eq!(found.roles, ["admin"]);
    assert!(corral_api::auth::lookup(&pool, "crl_legacy_two")
        .await
        .expect("lookup")
        .is_none());
    // Adopted once: a second start adopts nothing.
    let (ok, _, stderr) = corral(&db.url, &["token", "list"]);
    assert!(ok && !stderr.contains("old api_tokens"), "{stderr}");
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'TokenCreated'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(created, 2);
    // A revoked old token never gets its secret's hash back.
    let secrets: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM access_token_secrets WHERE token_hash = sha256('crl_legacy_two'::bytea)",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(secrets, 0);
    // A token revoked in the old table after its adoption (by an older binary during an
    // upgrade) is revoked at the next start.
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE subject = 'old-admin'")
        .execute(&pool)
        .await
        .expect("revoke the old way");
    let (ok, _, stderr) = corral(&db.url, &["token", "list"]);
    assert!(ok, "{stderr}");
    assert!(corral_api::auth::lookup(&pool, "crl_legacy_one")
        .await
        .expect("lookup")
        .is_none());
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn role_revoke_and_grant_change_what_a_token_may_use() {
    let db = TestDb::new().await;
    let (ok, stdout, stderr) = corral(
        &db.url,
        &["token", "create", "--subject", "ops", "--role", "admin"],
    );
    assert!(ok, "{stderr}");
    let token = stdout.lines().last().expect("a line").to_string();
    let pool = db.pool(1).await;
    let roles = |pool: sqlx::PgPool, token: String| async move {
        corral_api::auth::lookup(&pool, &token)
            .await
            .expect("lookup")
            .expect("a live token")
            .roles
    };
    assert_eq!(roles(pool.clone(), token.clone()).await, ["admin"]);
    let (ok, _, stderr) = corral(
        &db.url,
        &[
            "role",
            "revoke",
            "--subject",
            "ops",
            "--role",
            "admin",
            "--reason",
            "moved team",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(roles(pool.clone(), token.clone()).await.is_empty());
    let (ok, _, stderr) = corral(
        &db.url,
        &["role", "grant", "--subject", "ops", "--role", "admin"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(roles(pool.clone(), token.clone()).await, ["admin"]);
    let (ok, _, stderr) = corral(
        &db.url,
        &["role", "revoke", "--subject", "nobody", "--role", "admin"],
    );
    assert!(!ok && stderr.contains("no subject"), "{stderr}");
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn custom_roles_are_defined_listed_and_bound_and_scopes_must_exist() {
    let db = TestDb::new().await;
    let (ok, stdout, stderr) = corral(
        &db.url,
        &[
            "role",
            "define",
            "--name",
            "netops",
            "--permissions",
            "group.read,membership.edit",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("defined role netops"), "{stdout}");
    let (ok, _, stderr) = corral(
        &db.url,
        &[
            "role",
            "define",
            "--name",
            "netops",
            "--permissions",
            "group.fly",
        ],
    );
    assert!(!ok && stderr.contains("unknown permission"), "{stderr}");
    let (ok, stdout, stderr) = corral(&db.url, &["role", "list"]);
    assert!(ok, "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("netops"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("custom") && line.contains("group.read,membership.edit"),
        "{line}"
    );
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("admin") && l.contains("built-in")));

    // A token of the custom role carries it.
    let (ok, stdout, stderr) = corral(
        &db.url,
        &["token", "create", "--subject", "nora", "--role", "netops"],
    );
    assert!(ok, "{stderr}");
    let token = stdout.lines().last().expect("a line").to_string();
    let pool = db.pool(1).await;
    let credential = corral_api::auth::lookup(&pool, &token)
        .await
        .expect("lookup")
        .expect("a live token");
    assert_eq!(credential.roles, ["netops"]);

    // A scope must name a group that exists.
    let missing = uuid::Uuid::new_v4().to_string();
    let (ok, _, stderr) = corral(
        &db.url,
        &[
            "role",
            "grant",
            "--subject",
            "nora",
            "--role",
            "viewer",
            "--scope",
            &missing,
        ],
    );
    assert!(!ok && stderr.contains("no group has the id"), "{stderr}");
    let (ok, _, stderr) = corral(&db.url, &["role", "delete", "--name", "netops"]);
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = corral(&db.url, &["role", "list"]);
    assert!(ok && !stdout.contains("netops"), "{stdout}");
    pool.close().await;
    db.drop_db().await;
}
