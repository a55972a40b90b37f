//! Rebuilding a projection into fresh tables, resuming after an interruption.

use corral_projections::group_tree::GroupTreeProjection;
use corral_projections::rebuild::{rebuild, Options, Outcome};
use corral_tests::TestApp;

async fn snapshot(app: &TestApp) -> Vec<(String, String, i32, i64)> {
    let rows: Vec<(String, String, i32, i64)> = sqlx::query_as(
        "SELECT g.id::text, g.path, g.depth, (SELECT count(*) FROM rm_group_tree.group_closure c WHERE c.descendant_id = g.id)
           FROM rm_group_tree.groups g ORDER BY g.id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("snapshot");
    rows
}

#[tokio::test]
async fn rebuild_resumes_after_an_interruption_and_swaps_in_an_identical_read_model() {
    let app = TestApp::spawn().await;
    let site = app.create_group("Site", None).await;
    for i in 0..12 {
        let g = app.create_group(&format!("G{i}"), Some(&site)).await;
        app.create_group("child", Some(&g)).await;
    }
    let before = snapshot(&app).await;
    let options = Options {
        batch_size: 5,
        max_batches: Some(2),
    };
    let first = rebuild(&app.pool, &GroupTreeProjection, options, |_| {})
        .await
        .expect("partial");
    assert_eq!(first, Outcome::Interrupted { processed: 10 });
    // The old tables kept serving meanwhile.
    assert_eq!(snapshot(&app).await, before);
    let mut reports = 0;
    let done = rebuild(
        &app.pool,
        &GroupTreeProjection,
        Options {
            batch_size: 5,
            max_batches: None,
        },
        |_| reports += 1,
    )
    .await
    .expect("resume");
    assert!(
        matches!(done, Outcome::Swapped { resumed: true, .. }),
        "{done:?}"
    );
    assert!(reports > 0, "progress was reported");
    assert_eq!(snapshot(&app).await, before);
    // The live projector continues on the swapped tables.
    let late = app.create_group("late", Some(&site)).await;
    let path: String =
        sqlx::query_scalar("SELECT path FROM rm_group_tree.groups WHERE id = $1::uuid")
            .bind(&late)
            .fetch_one(&app.pool)
            .await
            .expect("late");
    assert_eq!(path, "Inventory/Site/late");
    app.shutdown().await;
}
