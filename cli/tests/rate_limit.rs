//! `corral serve` limits each subject's request rate from its settings: beyond the burst a
//! client gets 429 with Retry-After, and other subjects are not affected.

use corral_tests::served::Served;
use serde_json::json;

#[tokio::test]
async fn serve_answers_429_with_retry_after_beyond_a_subjects_burst() {
    let served = Served::start(
        env!("CARGO_BIN_EXE_corral"),
        &[
            ("CORRAL_RATE_LIMIT_PER_SUBJECT", "2"),
            ("CORRAL_RATE_LIMIT_BURST", "5"),
        ],
    )
    .await;
    let query = "{ root(type: DEVICE) { name } }";
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = served.post_graphql(&served.viewer, query, json!({})).await;
        if r.status == 429 {
            assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
            assert!(r.text().contains("RATE_LIMITED"), "{}", r.text());
        }
        statuses.push(r.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 5,
        "{statuses:?}"
    );
    // Another subject has a bucket of its own.
    let other = served.post_graphql(&served.admin, query, json!({})).await;
    assert_eq!(other.status, 200, "{}", other.text());
    served.stop().await;
}
