//! Look-alike names through GraphQL (issue 13, point 5): a precomposed and a decomposed `é`
//! are one name, and invisible or reordering characters are refused in names, descriptions
//! and reasons.

use corral_tests::TestApp;
use serde_json::{json, Value};

use super::{codes, create, CREATE, RENAME};

const UPDATE: &str = "mutation($input: UpdateGroupInput!) { updateGroup(input: $input) { group { description } userErrors { field code message } } }";
const GROUP: &str = "query($id: ID!) { group(id: $id) { name path description version } }";

/// The one userError of a payload, as (field, code, message).
fn refusal(payload: &Value) -> (String, String, String) {
    let errors = payload["userErrors"].as_array().expect("userErrors");
    assert_eq!(errors.len(), 1, "one userError: {payload}");
    let text = |k: &str| errors[0][k].as_str().unwrap_or_default().to_string();
    (text("field"), text("code"), text("message"))
}

#[tokio::test]
async fn a_precomposed_and_a_decomposed_e_are_one_name_and_either_spelling_finds_the_group() {
    let app = TestApp::spawn().await;
    let site = app.create_group("Site", None).await;
    let cafe = app.create_group("Caf\u{e9}", Some(&site)).await;
    let twin = create(
        &app,
        json!({ "name": "Cafe\u{301}", "type": "DEVICE", "parentId": site }),
    )
    .await;
    assert_eq!(codes(&twin), vec!["NAME_TAKEN"], "{twin}");

    // A name sent decomposed is stored composed, so it collides the other way round too.
    let bar = create(
        &app,
        json!({ "name": "Bare\u{301}", "type": "DEVICE", "parentId": site }),
    )
    .await;
    assert_eq!(bar["group"]["name"], "Bar\u{e9}");
    let twin = create(
        &app,
        json!({ "name": "BAR\u{c9}", "type": "DEVICE", "parentId": site }),
    )
    .await;
    assert_eq!(codes(&twin), vec!["NAME_TAKEN"], "{twin}");

    let q = "query($path: String!) { groupByPath(type: DEVICE, path: $path) { id name } }";
    for path in ["Inventory/Site/Cafe\u{301}", "inventory/site/CAF\u{c9}"] {
        let found = app.data(&app.viewer, q, json!({ "path": path })).await;
        assert_eq!(found["groupByPath"]["id"], cafe.as_str(), "{path}");
    }
    let q = "query($s: String) { groups(type: DEVICE, search: $s) { totalCount edges { node { id } } } }";
    let found = app.data(&app.viewer, q, json!({ "s": "fe\u{301}" })).await;
    assert_eq!(found["groups"]["totalCount"], 1, "{found}");
    assert_eq!(found["groups"]["edges"][0]["node"]["id"], cafe.as_str());
    app.shutdown().await;
}

#[tokio::test]
async fn renaming_to_a_name_with_a_right_to_left_override_is_refused_and_keeps_the_name() {
    let app = TestApp::spawn().await;
    let id = app.create_group("invoice", None).await;
    let before = app.data(&app.viewer, GROUP, json!({ "id": id })).await;
    // Displayed right to left after the override, this would read "invoicexe.pdf".
    let r = app
        .data(
            &app.admin,
            RENAME,
            json!({ "input": { "id": id, "name": "invoice\u{202e}fdp.exe" } }),
        )
        .await;
    let (field, code, message) = refusal(&r["renameGroup"]);
    assert_eq!((field.as_str(), code.as_str()), ("name", "INVALID"));
    assert!(
        message.contains("U+202E RIGHT-TO-LEFT OVERRIDE") && message.contains("character 8"),
        "{message}"
    );
    assert!(r["renameGroup"]["group"].is_null());
    let after = app.data(&app.viewer, GROUP, json!({ "id": id })).await;
    assert_eq!(after, before, "nothing changed");
    app.shutdown().await;
}

#[tokio::test]
async fn a_description_with_a_bidi_override_or_a_bell_is_refused_and_tabs_and_line_breaks_are_kept()
{
    let app = TestApp::spawn().await;
    let id = app.create_group("Rack-1", None).await;
    for bad in ["row 2 \u{202e}A", "ring\u{7}"] {
        let r = app
            .data(
                &app.admin,
                UPDATE,
                json!({ "input": { "id": id, "description": bad } }),
            )
            .await;
        let (field, code, _) = refusal(&r["updateGroup"]);
        assert_eq!((field.as_str(), code.as_str()), ("description", "INVALID"));
    }
    let c = create(
        &app,
        json!({ "name": "Rack-2", "type": "DEVICE", "description": "a\u{2066}b" }),
    )
    .await;
    assert_eq!(refusal(&c).0, "description");
    assert_eq!(
        app.data(&app.viewer, GROUP, json!({ "id": id })).await["group"]["description"],
        Value::Null
    );

    let text = "rack\tR1\nrow 2\r\nfloor 3";
    let r = app
        .data(
            &app.admin,
            UPDATE,
            json!({ "input": { "id": id, "description": text } }),
        )
        .await;
    assert_eq!(r["updateGroup"]["userErrors"], json!([]));
    assert_eq!(
        app.data(&app.viewer, GROUP, json!({ "id": id })).await["group"]["description"],
        text
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_reason_with_a_bidi_override_or_a_control_character_is_refused_before_anything_changes() {
    let app = TestApp::spawn().await;
    let id = app.create_group("Edge", None).await;
    for reason in ["typo \u{202e}fixed", "typo\u{1b}[2J"] {
        let r = app
            .data(
                &app.admin,
                RENAME,
                json!({ "input": { "id": id, "name": "Edge-2", "reason": reason } }),
            )
            .await;
        let (field, code, _) = refusal(&r["renameGroup"]);
        assert_eq!((field.as_str(), code.as_str()), ("reason", "INVALID"));
    }
    let c = app
        .data(
            &app.admin,
            CREATE,
            json!({ "input": { "name": "Core", "type": "DEVICE", "reason": "new\u{2069}" } }),
        )
        .await;
    assert_eq!(refusal(&c["createGroup"]).0, "reason");
    assert_eq!(
        app.data(&app.viewer, GROUP, json!({ "id": id })).await["group"]["name"],
        "Edge"
    );
    let r = app
        .data(
            &app.admin,
            RENAME,
            json!({ "input": { "id": id, "name": "Edge-2", "reason": "typo\n\tsee ticket 12" } }),
        )
        .await;
    assert_eq!(r["renameGroup"]["userErrors"], json!([]));
    app.shutdown().await;
}
