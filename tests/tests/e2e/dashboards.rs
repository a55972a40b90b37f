//! Dashboards: widgets and their checks, ownership, defaults, templates, and `Widget.data`
//! (figures, `$group`, and the redacted state for callers who may not read groups).
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::Request;
use chrono::{TimeDelta, Utc};
use corral_projections::health::BucketSize;
use corral_tests::TestApp;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::membership::{add, devices};

const DASHBOARD_FIELDS: &str = "id name isTemplate isDefault owner copiedFrom layoutVersion widgets { id kind title config position { x y w h } }";

fn mutation(field: &str, input: &str, selection: &str) -> String {
    format!(
        "mutation($input: {input}!) {{ {field}(input: $input) {{ {selection} userErrors {{ field code message }} }} }}"
    )
}

async fn call(app: &TestApp, token: &str, field: &str, input_type: &str, input: Value) -> Value {
    let selection = match field {
        "addWidget" | "updateWidget" | "moveWidget" => {
            format!("widget {{ id kind title config position {{ x y w h }} }} dashboard {{ {DASHBOARD_FIELDS} }}")
        }
        "deleteDashboard" | "deleteDashboardTemplate" => "deletedId".to_string(),
        _ => format!("dashboard {{ {DASHBOARD_FIELDS} }}"),
    };
    let q = mutation(field, input_type, &selection);
    app.data(token, &q, json!({ "input": input })).await[field].clone()
}

async fn create(app: &TestApp, token: &str, name: &str) -> String {
    let p = call(
        app,
        token,
        "createDashboard",
        "CreateDashboardInput",
        json!({ "name": name }),
    )
    .await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    p["dashboard"]["id"].as_str().unwrap().to_string()
}

fn widget(dashboard: &str, kind: &str, config: Value, x: i64, y: i64, w: i64, h: i64) -> Value {
    json!({
        "dashboardId": dashboard, "kind": kind, "title": format!("{kind} widget"),
        "config": config, "position": { "x": x, "y": y, "w": w, "h": h },
    })
}

async fn add_widget(app: &TestApp, token: &str, input: Value) -> Value {
    call(app, token, "addWidget", "AddWidgetInput", input).await
}

fn codes(payload: &Value) -> Vec<(String, String)> {
    payload["userErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap_or("").to_string(),
                e["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn widgets_are_checked_and_every_change_moves_the_layout_version() {
    let app = TestApp::spawn().await;
    let group = app.create_group("Racks", None).await;
    let board = create(&app, &app.viewer, "  Ops  ").await;

    let p = add_widget(
        &app,
        &app.viewer,
        widget(
            &board,
            "GROUP_UTILIZATION",
            json!({ "group": group, "bucket": "ONE_HOUR", "rangeHours": 48 }),
            0,
            0,
            6,
            4,
        ),
    )
    .await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let first = p["widget"]["id"].as_str().unwrap().to_string();
    assert_eq!(p["dashboard"]["name"], "Ops");
    assert_eq!(p["dashboard"]["layoutVersion"], 2);
    assert_eq!(p["widget"]["config"]["bucket"], "ONE_HOUR");

    // Bad kinds, configs and positions are userErrors, and change nothing.
    let bad = [
        (
            widget(&board, "PIE_CHART", json!({ "group": group }), 6, 0, 6, 4),
            ("kind", "INVALID"),
        ),
        (
            widget(&board, "GROUP_AVAILABILITY", json!({}), 6, 0, 6, 4),
            ("config", "INVALID"),
        ),
        (
            widget(
                &board,
                "GROUP_AVAILABILITY",
                json!({ "group": "not-a-group" }),
                6,
                0,
                6,
                4,
            ),
            ("config", "INVALID"),
        ),
        (
            widget(
                &board,
                "GROUP_AVAILABILITY",
                json!({ "group": group, "rangeHours": 1000 }),
                6,
                0,
                6,
                4,
            ),
            ("config", "INVALID"),
        ),
        (
            widget(
                &board,
                "GROUP_MEMBER_COUNT",
                json!({ "group": group, "bucket": "ONE_HOUR" }),
                6,
                0,
                6,
                4,
            ),
            ("config", "INVALID"),
        ),
        (
            widget(
                &board,
                "GROUP_AVAILABILITY",
                json!({ "group": group }),
                8,
                0,
                6,
                4,
            ),
            ("position", "INVALID"),
        ),
        (
            widget(
                &board,
                "GROUP_AVAILABILITY",
                json!({ "group": group }),
                0,
                0,
                0,
                4,
            ),
            ("position", "INVALID"),
        ),
        (
            widget(
                &board,
                "GROUP_AVAILABILITY",
                json!({ "group": group }),
                -1,
                0,
                1,
                1,
            ),
            ("position", "INVALID"),
        ),
        (
            widget(
                &board,
                "GROUP_AVAILABILITY",
                json!({ "group": group }),
                5,
                3,
                2,
                2,
            ),
            ("position", "OVERLAP"),
        ),
    ];
    for (input, (field, code)) in bad {
        let p = add_widget(&app, &app.viewer, input.clone()).await;
        assert_eq!(
            codes(&p),
            vec![(field.to_string(), code.to_string())],
            "{input}: {p}"
        );
        assert!(p["widget"].is_null());
    }

    // `$group` binds a widget to the dashboard variable.
    let p = add_widget(
        &app,
        &app.viewer,
        widget(
            &board,
            "GROUP_MEMBER_COUNT",
            json!({ "group": "$group", "mode": "DIRECT" }),
            6,
            0,
            6,
            2,
        ),
    )
    .await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let second = p["widget"]["id"].as_str().unwrap().to_string();
    assert_eq!(p["dashboard"]["layoutVersion"], 3);

    // A stale layout version is refused.
    let p = call(
        &app,
        &app.viewer,
        "moveWidget",
        "MoveWidgetInput",
        json!({ "dashboardId": board, "widgetId": second, "position": { "x": 6, "y": 2, "w": 6, "h": 2 }, "expectedLayoutVersion": 2 }),
    )
    .await;
    assert_eq!(
        codes(&p),
        vec![(
            "expectedLayoutVersion".to_string(),
            "LAYOUT_CONFLICT".to_string()
        )]
    );
    let p = call(
        &app,
        &app.viewer,
        "moveWidget",
        "MoveWidgetInput",
        json!({ "dashboardId": board, "widgetId": second, "position": { "x": 6, "y": 2, "w": 6, "h": 2 }, "expectedLayoutVersion": 3 }),
    )
    .await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    assert_eq!(
        p["widget"]["position"],
        json!({ "x": 6, "y": 2, "w": 6, "h": 2 })
    );
    assert_eq!(p["dashboard"]["layoutVersion"], 4);

    // Changing the kind checks the kept config against the new kind.
    let p = call(
        &app,
        &app.viewer,
        "updateWidget",
        "UpdateWidgetInput",
        json!({ "dashboardId": board, "widgetId": second, "kind": "GROUP_AVAILABILITY" }),
    )
    .await;
    assert_eq!(
        codes(&p),
        vec![("config".to_string(), "INVALID".to_string())]
    );
    let p = call(
        &app,
        &app.viewer,
        "updateWidget",
        "UpdateWidgetInput",
        json!({ "dashboardId": board, "widgetId": first, "title": "CPU of the racks", "config": { "group": "$group" } }),
    )
    .await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    assert_eq!(p["widget"]["title"], "CPU of the racks");
    assert_eq!(p["widget"]["config"], json!({ "group": "$group" }));
    assert_eq!(p["dashboard"]["layoutVersion"], 5);

    let p = call(
        &app,
        &app.viewer,
        "removeWidget",
        "RemoveWidgetInput",
        json!({ "dashboardId": board, "widgetId": second }),
    )
    .await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    assert_eq!(p["dashboard"]["layoutVersion"], 6);
    assert_eq!(p["dashboard"]["widgets"].as_array().unwrap().len(), 1);
    let p = call(
        &app,
        &app.viewer,
        "removeWidget",
        "RemoveWidgetInput",
        json!({ "dashboardId": board, "widgetId": second }),
    )
    .await;
    assert_eq!(
        codes(&p),
        vec![("widgetId".to_string(), "WIDGET_NOT_FOUND".to_string())]
    );

    // At most 50 widgets.
    for i in 0..49 {
        let p = add_widget(
            &app,
            &app.viewer,
            widget(
                &board,
                "GROUP_MEMBER_COUNT",
                json!({ "group": group }),
                i % 12,
                10 + i / 12,
                1,
                1,
            ),
        )
        .await;
        assert_eq!(p["userErrors"], json!([]), "widget {i}: {p}");
    }
    let p = add_widget(
        &app,
        &app.viewer,
        widget(
            &board,
            "GROUP_MEMBER_COUNT",
            json!({ "group": group }),
            0,
            100,
            1,
            1,
        ),
    )
    .await;
    assert_eq!(codes(&p), vec![(String::new(), "TOO_MANY_WIDGETS".into())]);

    let p = call(
        &app,
        &app.viewer,
        "renameDashboard",
        "RenameDashboardInput",
        json!({ "id": board, "name": "" }),
    )
    .await;
    assert_eq!(codes(&p), vec![("name".into(), "INVALID".into())]);
    let p = call(
        &app,
        &app.viewer,
        "renameDashboard",
        "RenameDashboardInput",
        json!({ "id": board, "name": "Racks overview" }),
    )
    .await;
    assert_eq!(p["dashboard"]["name"], "Racks overview");
    assert_eq!(p["dashboard"]["widgets"].as_array().unwrap().len(), 50);

    // The read model matches a replay of the events.
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'Dashboard' AND aggregate_id = $1",
    )
    .bind(&board)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(events, 1 + 2 + 1 + 1 + 1 + 49 + 1);

    let p = call(
        &app,
        &app.viewer,
        "deleteDashboard",
        "DashboardIdInput",
        json!({ "id": board }),
    )
    .await;
    assert_eq!(p["deletedId"], board.as_str());
    let d = app
        .data(
            &app.viewer,
            "query($id: ID!) { dashboard(id: $id) { id } myDashboards { totalCount } }",
            json!({ "id": board }),
        )
        .await;
    assert!(d["dashboard"].is_null());
    assert_eq!(d["myDashboards"]["totalCount"], 0);
    let widgets: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_dashboards.widgets")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(widgets, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn users_see_and_change_only_their_own_dashboards_and_one_default() {
    let app = TestApp::spawn().await;
    let group = app.create_group("Core", None).await;
    let a = create(&app, &app.viewer, "Beta").await;
    let b = create(&app, &app.viewer, "alpha").await;
    let theirs = create(&app, &app.operator, "Oscar's").await;

    // Another user's dashboard behaves as if it did not exist.
    let d = app
        .data(
            &app.viewer,
            "query($id: ID!) { dashboard(id: $id) { id } myDashboards { totalCount edges { node { name } } } }",
            json!({ "id": theirs }),
        )
        .await;
    assert!(d["dashboard"].is_null());
    assert_eq!(d["myDashboards"]["totalCount"], 2);
    let names: Vec<&str> = d["myDashboards"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alpha", "Beta"], "by name, ignoring case");
    let attempts = [
        (
            "renameDashboard",
            "RenameDashboardInput",
            json!({ "id": theirs, "name": "mine now" }),
            "id",
        ),
        (
            "deleteDashboard",
            "DashboardIdInput",
            json!({ "id": theirs }),
            "id",
        ),
        (
            "setDefaultDashboard",
            "DashboardIdInput",
            json!({ "id": theirs }),
            "id",
        ),
        (
            "addWidget",
            "AddWidgetInput",
            widget(
                &theirs,
                "GROUP_MEMBER_COUNT",
                json!({ "group": group }),
                0,
                0,
                1,
                1,
            ),
            "dashboardId",
        ),
    ];
    for (field, input_type, input, id_field) in attempts {
        // Admins are no exception: a dashboard belongs to its owner.
        for token in [&app.viewer, &app.admin] {
            let p = call(&app, token, field, input_type, input.clone()).await;
            assert_eq!(
                codes(&p),
                vec![(id_field.to_string(), "NOT_FOUND".to_string())],
                "{field}: {p}"
            );
        }
    }
    let d = app
        .data(
            &app.operator,
            "query($id: ID!) { dashboard(id: $id) { name widgets { id } } }",
            json!({ "id": theirs }),
        )
        .await;
    assert_eq!(d["dashboard"]["name"], "Oscar's");
    assert_eq!(d["dashboard"]["widgets"], json!([]));

    // One default per user: the latest choice wins.
    for (board, expected_default) in [(&a, &a), (&b, &b)] {
        let p = call(
            &app,
            &app.viewer,
            "setDefaultDashboard",
            "DashboardIdInput",
            json!({ "id": board }),
        )
        .await;
        assert_eq!(p["userErrors"], json!([]), "{p}");
        assert_eq!(p["dashboard"]["isDefault"], true);
        let d = app
            .data(
                &app.viewer,
                "{ myDefaultDashboard { id } myDashboards { edges { node { id isDefault } } } }",
                json!({}),
            )
            .await;
        assert_eq!(d["myDefaultDashboard"]["id"], expected_default.as_str());
        let defaults: Vec<&str> = d["myDashboards"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["node"]["isDefault"] == true)
            .map(|e| e["node"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(defaults, vec![expected_default.as_str()]);
    }
    // The operator's default is theirs alone.
    let d = app
        .data(&app.operator, "{ myDefaultDashboard { id } }", json!({}))
        .await;
    assert!(d["myDefaultDashboard"].is_null());
    // Deleting the default leaves none.
    call(
        &app,
        &app.viewer,
        "deleteDashboard",
        "DashboardIdInput",
        json!({ "id": b }),
    )
    .await;
    let d = app
        .data(&app.viewer, "{ myDefaultDashboard { id } }", json!({}))
        .await;
    assert!(d["myDefaultDashboard"].is_null());
    app.shutdown().await;
}

#[tokio::test]
async fn admins_publish_templates_and_anyone_clones_them() {
    let app = TestApp::spawn().await;
    let group = app.create_group("Edge", None).await;
    let source = create(&app, &app.admin, "NOC wall").await;
    for (i, kind) in ["GROUP_HEALTH_SUMMARY", "GROUP_MEMBER_COUNT"]
        .iter()
        .enumerate()
    {
        let p = add_widget(
            &app,
            &app.admin,
            widget(
                &source,
                kind,
                json!({ "group": if i == 0 { "$group".to_string() } else { group.clone() } }),
                (i * 6) as i64,
                0,
                6,
                3,
            ),
        )
        .await;
        assert_eq!(p["userErrors"], json!([]), "{p}");
    }
    let publish = mutation(
        "publishDashboardTemplate",
        "PublishDashboardTemplateInput",
        &format!("dashboard {{ {DASHBOARD_FIELDS} }}"),
    );
    for token in [&app.viewer, &app.operator] {
        let body = app
            .gql(
                token,
                &publish,
                json!({ "input": { "dashboardId": source } }),
            )
            .await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    }
    let p = app
        .data(
            &app.admin,
            &publish,
            json!({ "input": { "dashboardId": source, "name": "Site health" } }),
        )
        .await["publishDashboardTemplate"]
        .clone();
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let template = p["dashboard"]["id"].as_str().unwrap().to_string();
    assert_eq!(p["dashboard"]["isTemplate"], true);
    assert!(p["dashboard"]["owner"].is_null());
    assert_eq!(p["dashboard"]["copiedFrom"], source.as_str());
    // From scratch, with a bad widget: nothing is published.
    let p = app
        .data(
            &app.admin,
            &publish,
            json!({ "input": { "name": "Broken", "widgets": [{ "kind": "NOPE", "title": "x", "config": {}, "position": { "x": 0, "y": 0, "w": 1, "h": 1 } }] } }),
        )
        .await["publishDashboardTemplate"]
        .clone();
    assert_eq!(
        codes(&p),
        vec![("widgets[0].kind".to_string(), "INVALID".to_string())]
    );

    let t = app
        .data(
            &app.viewer,
            "{ dashboardTemplates { totalCount edges { node { id name widgets { kind } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(t["dashboardTemplates"]["totalCount"], 1);
    assert_eq!(
        t["dashboardTemplates"]["edges"][0]["node"]["name"],
        "Site health"
    );
    // A template cannot be changed as if it were someone's dashboard.
    let p = call(
        &app,
        &app.admin,
        "renameDashboard",
        "RenameDashboardInput",
        json!({ "id": template, "name": "x" }),
    )
    .await;
    assert_eq!(codes(&p), vec![("id".into(), "NOT_FOUND".into())]);

    let clone = mutation(
        "cloneDashboardTemplate",
        "CloneDashboardTemplateInput",
        &format!("dashboard {{ {DASHBOARD_FIELDS} }}"),
    );
    let p = app
        .data(
            &app.viewer,
            &clone,
            json!({ "input": { "templateId": template } }),
        )
        .await["cloneDashboardTemplate"]
        .clone();
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let mine = &p["dashboard"];
    assert_eq!(mine["owner"], "vera");
    assert_eq!(mine["name"], "Site health");
    assert_eq!(mine["isTemplate"], false);
    assert_eq!(mine["copiedFrom"], template.as_str());
    let widgets = mine["widgets"].as_array().unwrap();
    assert_eq!(widgets.len(), 2);
    assert_eq!(widgets[0]["config"]["group"], "$group");
    assert_eq!(widgets[1]["config"]["group"], group.as_str());
    let template_widgets: Vec<String> = app
        .data(
            &app.viewer,
            "query($id: ID!) { dashboard(id: $id) { widgets { id } } }",
            json!({ "id": template }),
        )
        .await["dashboard"]["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    for w in widgets {
        assert!(
            !template_widgets.contains(&w["id"].as_str().unwrap().to_string()),
            "a clone's widgets get ids of their own"
        );
    }
    // The clone is the viewer's: they can change it; the template stays as it was.
    let p = call(
        &app,
        &app.viewer,
        "removeWidget",
        "RemoveWidgetInput",
        json!({ "dashboardId": mine["id"], "widgetId": widgets[0]["id"] }),
    )
    .await;
    assert_eq!(p["userErrors"], json!([]), "{p}");

    let delete = mutation("deleteDashboardTemplate", "DashboardIdInput", "deletedId");
    let body = app
        .gql(&app.viewer, &delete, json!({ "input": { "id": template } }))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let p = app
        .data(&app.admin, &delete, json!({ "input": { "id": source } }))
        .await;
    assert_eq!(
        codes(&p["deleteDashboardTemplate"]),
        vec![("id".into(), "NOT_FOUND".into())],
        "a dashboard is not a template"
    );
    let p = app
        .data(&app.admin, &delete, json!({ "input": { "id": template } }))
        .await;
    assert_eq!(p["deleteDashboardTemplate"]["deletedId"], template.as_str());
    let p = app
        .data(
            &app.operator,
            &clone,
            json!({ "input": { "templateId": template } }),
        )
        .await["cloneDashboardTemplate"]
        .clone();
    assert_eq!(codes(&p), vec![("templateId".into(), "NOT_FOUND".into())]);
    app.shutdown().await;
}

const DATA: &str = "query($id: ID!, $group: ID) { dashboard(id: $id, group: $group) { widgets { kind data { state message group { id } memberCount memberCountMode health { source buckets { start samples devicesReporting cpu { avg max } availability { percent up down unknown } } } } } } }";

/// POSTs a query to `router` (an app built with another policy).
async fn gql_on(router: &axum::Router, token: &str, query: &str, variables: Value) -> Value {
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(
            json!({ "query": query, "variables": variables }).to_string(),
        ))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn widget_data_shows_figures_and_is_redacted_for_callers_who_may_not_read_groups() {
    let app = TestApp::spawn().await;
    let ids = devices(&app, "wd", 3).await;
    let parent = app.create_group("Parent", None).await;
    let child = app.create_group("Child", Some(&parent)).await;
    add(&app, &parent, &ids[0..1]).await;
    add(&app, &child, &ids[1..3]).await;
    // Samples of the last hour, every device in every 5-minute bucket.
    let now = Utc::now();
    let start = BucketSize::FiveMinutes.start_of(now - TimeDelta::minutes(30));
    let samples: Vec<Value> = ids
        .iter()
        .flat_map(|id| {
            (0..5).map(move |step| {
                json!({ "deviceId": id, "ts": (start + TimeDelta::minutes(step * 5)).to_rfc3339(),
                        "cpuPercent": 40.5, "memPercent": 20, "diskPercent": 10 })
            })
        })
        .collect();
    let p = app
        .data(
            &app.operator,
            "mutation($input: IngestSysmonInput!) { ingestSysmon(input: $input) { accepted } }",
            json!({ "input": { "samples": samples } }),
        )
        .await;
    assert_eq!(p["ingestSysmon"]["accepted"], 15);

    let board = create(&app, &app.viewer, "Mine").await;
    for (i, (kind, config)) in [
        (
            "GROUP_MEMBER_COUNT",
            json!({ "group": parent, "mode": "EFFECTIVE" }),
        ),
        (
            "GROUP_MEMBER_COUNT",
            json!({ "group": parent, "mode": "DIRECT" }),
        ),
        (
            "GROUP_UTILIZATION",
            json!({ "group": "$group", "rangeHours": 1 }),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let p = add_widget(
            &app,
            &app.viewer,
            widget(&board, kind, config, 0, i as i64, 4, 1),
        )
        .await;
        assert_eq!(p["userErrors"], json!([]), "{p}");
    }

    // Without `group`, the `$group` widget has no group; the others render.
    let d = app.data(&app.viewer, DATA, json!({ "id": board })).await;
    let w = d["dashboard"]["widgets"].as_array().unwrap().clone();
    assert_eq!(w[0]["data"]["state"], "OK");
    assert_eq!(w[0]["data"]["memberCount"], 3);
    assert_eq!(w[0]["data"]["memberCountMode"], "EFFECTIVE");
    assert_eq!(w[1]["data"]["memberCount"], 1);
    assert_eq!(w[2]["data"]["state"], "NO_GROUP");
    assert!(w[2]["data"]["health"].is_null());

    // With `group`, the health widget shows the group's series over its last hour. The
    // rollups follow membership asynchronously: wait for all three devices to report.
    let mut shown = Value::Null;
    for _ in 0..100 {
        let d = app
            .data(&app.viewer, DATA, json!({ "id": board, "group": parent }))
            .await;
        shown = d["dashboard"]["widgets"][2]["data"].clone();
        let reporting = shown["health"]["buckets"]
            .as_array()
            .map(|b| b.iter().filter(|b| b["devicesReporting"] == 3).count())
            .unwrap_or(0);
        if reporting == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(shown["state"], "OK", "{shown}");
    assert_eq!(shown["group"]["id"], parent.as_str());
    assert_eq!(shown["health"]["source"], "ROLLUP");
    let buckets = shown["health"]["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 12, "one hour of 5-minute buckets");
    let full: Vec<&Value> = buckets
        .iter()
        .filter(|b| b["devicesReporting"] == 3)
        .collect();
    assert_eq!(full.len(), 5, "{shown}");
    for b in full {
        assert_eq!(b["samples"], 3);
        assert_eq!(b["cpu"]["avg"], 40.5);
        assert_eq!(b["cpu"]["max"], 40.5);
    }
    // A group that does not exist.
    let d = app
        .data(
            &app.viewer,
            DATA,
            json!({ "id": board, "group": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(d["dashboard"]["widgets"][2]["data"]["state"], "NO_GROUP");

    // A policy under which viewers may use their dashboards but not read groups: every
    // widget is redacted, with no figure and no group, whatever group it is bound to.
    let restricted: String = corral_api::policy::default_policy()
        .lines()
        .filter(|l| l.trim() != "p, viewer, group.read, call")
        .chain(["p, operator, group.read, call"])
        .collect::<Vec<_>>()
        .join("\n");
    let router = app.router_with_policy(&restricted).await;
    let body = gql_on(
        &router,
        &app.viewer,
        "query($id: ID!) { group(id: $id) { id } }",
        json!({ "id": parent }),
    )
    .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let body = gql_on(
        &router,
        &app.viewer,
        DATA,
        json!({ "id": board, "group": parent }),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    for w in body["data"]["dashboard"]["widgets"].as_array().unwrap() {
        let data = &w["data"];
        assert_eq!(data["state"], "REDACTED", "{data}");
        assert!(data["group"].is_null());
        assert!(data["memberCount"].is_null());
        assert!(data["health"].is_null());
    }
    // The same dashboard under the same policy renders for a role that may read groups.
    let mine = create(&app, &app.operator, "Oscar's").await;
    add_widget(
        &app,
        &app.operator,
        widget(
            &mine,
            "GROUP_MEMBER_COUNT",
            json!({ "group": child }),
            0,
            0,
            1,
            1,
        ),
    )
    .await;
    let body = gql_on(&router, &app.operator, DATA, json!({ "id": mine })).await;
    assert_eq!(
        body["data"]["dashboard"]["widgets"][0]["data"]["memberCount"], 2,
        "{body}"
    );
    app.shutdown().await;
}
