//! Every row and quirk of shared/SRQL.md: what the filter parses to and what it selects.

use std::collections::BTreeMap;

use super::*;

fn named(id: &str, f: impl FnOnce(&mut Device)) -> Device {
    let mut d = device(id);
    f(&mut d);
    d
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn tokens_keep_colons_after_the_first_and_field_names_ignore_case() {
    let d = named("a", |d| {
        d.mac = Some("AA:BB:CC:DD:EE:FF".into());
        d.ip = Some("fd00::1".into());
        d.hostname = Some("web".into());
        d.metadata = tags(&[("rack", "r1")]);
    });
    assert!(hit("mac:aa:bb:cc:dd:ee:ff", &d));
    assert!(hit("ip:fd00::/16", &d));
    assert!(hit("HOSTNAME:web", &d));
    assert!(hit("metadata.Rack:r1", &d));
    assert_eq!(
        normalized("HOSTNAME:web metadata.RACK:r1"),
        "in:devices hostname:web metadata.rack:r1"
    );
}

#[test]
fn in_may_come_anywhere_the_last_one_wins_and_aliases_work() {
    for text in [
        "hostname:a in:devices",
        "in:services in:device hostname:a",
        "in:device_inventory hostname:a",
        "in:\"devices\" hostname:a",
    ] {
        assert_eq!(
            parse(text, GroupType::Service).expect(text).rule.kind(),
            GroupType::Device,
            "{text}"
        );
    }
    assert_eq!(
        parse("name:x in:services", GroupType::Device)
            .expect("svc")
            .rule
            .kind(),
        GroupType::Service
    );
    assert_eq!(
        parse("hostname:a", GroupType::Device)
            .expect("default")
            .rule
            .kind(),
        GroupType::Device
    );
    rejected_at("hostname:a in:interfaces", 15, "devices or services");
}

#[test]
fn outer_quotes_are_stripped_and_never_make_a_value_literal() {
    let d = named("a", |d| d.metadata = tags(&[("location", "building a-3")]));
    // Quirk 2: a quoted % is still ILIKE.
    assert!(hit("metadata.location:\"Building A%\"", &d));
    assert!(hit("metadata.location:'building a-3'", &d));
    // Quoted `>` is still a comparison, which hostname does not have.
    rejected_at("hostname:\">a\"", 10, "comparisons");
    // SRQL strips every outer `"` and then every outer `'`.
    assert_eq!(normalized("hostname:\"'web'\""), "in:devices hostname:web");
}

#[test]
fn percent_makes_ilike_with_underscore_wildcards_and_plain_values_are_case_sensitive() {
    let devices = [
        named("a", |d| d.hostname = Some("db-01".into())),
        named("b", |d| d.hostname = Some("DB_02".into())),
        named("c", |d| d.hostname = Some("db_03".into())),
        device("null"),
    ];
    // Quirk 5: `_` is a wildcard once `%` makes a LIKE.
    assert_eq!(selected("hostname:db_%", &devices), ["a", "b", "c"]);
    assert_eq!(selected("hostname:db\\_%", &devices), ["b", "c"]);
    // Without `%`, `=`: case-sensitive and `_` is literal.
    assert_eq!(selected("hostname:db_03", &devices), ["c"]);
    assert!(selected("hostname:DB-01", &devices).is_empty());
    // `!hostname`: NULL not selected, for `<>` and NOT ILIKE alike.
    assert_eq!(selected("!hostname:db-01", &devices), ["b", "c"]);
    assert_eq!(selected("!hostname:%02", &devices), ["a", "c"]);
}

#[test]
fn lists_allow_spaces_quotes_brackets_and_drop_empty_items() {
    let r = rule("uid:( a , \"b c\",, [d] )");
    assert_eq!(r.to_text(), "in:devices id:(a,\"b c\",\"[d]\")");
    assert_eq!(rule("uid:[a,b]").to_text(), "in:devices id:(a,b)");
    // uid lists are IN, and `%` in them is literal as in SRQL.
    let devices = [device("a%"), device("ab")];
    assert_eq!(selected("uid:(a%,x)", &devices), ["a%"]);
    assert_eq!(selected("!device_id:(a%,x)", &devices), ["ab"]);
}

#[test]
fn repeated_keys_and() {
    let d = named("a", |d| d.tags = tags(&[("env", "prod"), ("tier", "1")]));
    assert!(hit("tags:env tags:tier", &d));
    assert!(!hit("tags:env tags:other", &d));
    assert!(hit(
        "hostname:%a% hostname:%b%",
        &named("x", |d| d.hostname = Some("ab".into()))
    ));
}

#[test]
fn ip_cidr_range_text_and_like() {
    let devices = [
        named("v4", |d| d.ip = Some("10.1.2.3".into())),
        named("v4b", |d| d.ip = Some("192.168.1.20".into())),
        named("v6", |d| d.ip = Some("fd00::5".into())),
        device("null"),
    ];
    assert_eq!(selected("ip:10.0.0.0/8", &devices), ["v4"]);
    // Negated CIDR and range select the other family, never NULL.
    assert_eq!(selected("!ip:10.0.0.0/8", &devices), ["v4b", "v6"]);
    assert_eq!(selected("ip:192.168.1.10-192.168.1.30", &devices), ["v4b"]);
    assert_eq!(
        selected("!ip:192.168.1.10-192.168.1.30", &devices),
        ["v4", "v6"]
    );
    assert_eq!(selected("ip:fd00::/8", &devices), ["v6"]);
    assert_eq!(selected("ip:10.1.2.3", &devices), ["v4"]);
    assert_eq!(selected("!ip:10.1.2.3", &devices), ["v4b", "v6"]);
    assert_eq!(selected("ip:192.168.%", &devices), ["v4b"]);
    assert_eq!(selected("ip:FD00%", &devices), ["v6"]);
    // Lists are Corral's: any operand.
    assert_eq!(selected("ip:(10.0.0.0/8, fd00::5)", &devices), ["v4", "v6"]);
    assert_eq!(selected("!ip:(10.0.0.0/8, fd00::5)", &devices), ["v4b"]);
    assert_eq!(normalized("ip:10.0.0.0/08"), "in:devices ip:10.0.0.0/8");
}

#[test]
fn mac_compares_hex_digits_ignoring_case_and_separators_and_not_selects_null() {
    let devices = [
        named("colon", |d| d.mac = Some("AA:BB:CC:00:11:22".into())),
        named("dash", |d| d.mac = Some("aa-bb-cc-00-11-23".into())),
        named("dot", |d| d.mac = Some("aabb.cc00.1124".into())),
        device("null"),
    ];
    assert_eq!(selected("mac:aabbcc001122", &devices), ["colon"]);
    assert_eq!(selected("mac:AA-BB-CC-00-11-23", &devices), ["dash"]);
    assert_eq!(
        selected("mac:aa:bb:cc%", &devices),
        ["colon", "dash", "dot"]
    );
    assert_eq!(selected("mac:%2_", &devices), ["colon", "dash", "dot"]);
    assert_eq!(selected("mac:%11_4", &devices), ["dot"]);
    assert_eq!(
        selected("!mac:aabbcc001122", &devices),
        ["dash", "dot", "null"]
    );
    assert_eq!(selected("!mac:%22", &devices), ["dash", "dot", "null"]);
    assert_eq!(
        selected("mac:(aabbcc001122, AA.BB.CC.00.11.24)", &devices),
        ["colon", "dot"]
    );
}

#[test]
fn vendor_name_model_type_and_agent_id_skip_null_when_negated() {
    let devices = [
        named("cisco", |d| {
            d.vendor = Some("Cisco".into());
            d.model = Some("C9300".into());
            d.device_type = Some("Switch".into());
            d.agent_id = Some("agent-1".into());
        }),
        named("juniper", |d| {
            d.vendor = Some("Juniper".into());
            d.model = Some("MX".into());
            d.device_type = Some("Router".into());
            d.agent_id = Some("agent-2".into());
        }),
        device("null"),
    ];
    assert_eq!(selected("vendor_name:Cisco", &devices), ["cisco"]);
    assert!(
        selected("vendor_name:cisco", &devices).is_empty(),
        "case-sensitive"
    );
    assert_eq!(selected("!vendor_name:Cisco", &devices), ["juniper"]);
    assert_eq!(selected("!model:C9300", &devices), ["juniper"]);
    assert_eq!(selected("!type:Switch", &devices), ["juniper"]);
    assert_eq!(selected("!device_type:Switch", &devices), ["juniper"]);
    assert_eq!(selected("!agent_id:agent-1", &devices), ["juniper"]);
    // Corral's own `vendor` selects missing values when negated.
    assert_eq!(selected("!vendor:Cisco", &devices), ["juniper", "null"]);
    assert_eq!(
        normalized("!vendor_name:Cisco"),
        "in:devices !vendor_name:Cisco"
    );
    assert_eq!(normalized("vendor_name:Cisco"), "in:devices vendor:Cisco");
    assert_eq!(normalized("!device_type:Switch"), "in:devices !type:Switch");
}

#[test]
fn is_available_takes_srql_booleans_and_skips_null_when_negated() {
    let devices = [
        named("up", |d| d.is_available = Some(true)),
        named("down", |d| d.is_available = Some(false)),
        device("null"),
    ];
    for t in ["true", "TRUE", "yes", "Yes", "1"] {
        assert_eq!(
            selected(&format!("is_available:{t}"), &devices),
            ["up"],
            "{t}"
        );
    }
    for f in ["false", "no", "0", "NO"] {
        assert_eq!(
            selected(&format!("is_available:{f}"), &devices),
            ["down"],
            "{f}"
        );
    }
    assert_eq!(selected("!is_available:true", &devices), ["down"]);
    assert_eq!(
        normalized("is_available:YES"),
        "in:devices is_available:true"
    );
    rejected_at("is_available:maybe", 14, "boolean");
}

#[test]
fn tags_test_keys_any_of_a_list_and_negation_selects_untagged() {
    let devices = [
        named("env", |d| d.tags = tags(&[("env", "prod")])),
        named("bare", |d| d.tags = tags(&[("core", "")])),
        device("none"),
    ];
    assert_eq!(selected("tags:env", &devices), ["env"]);
    assert_eq!(selected("tags:(env,core)", &devices), ["env", "bare"]);
    // Quirk 6: `!tags:k` selects devices with no tags.
    assert_eq!(selected("!tags:env", &devices), ["bare", "none"]);
    assert_eq!(selected("!tags:(env,core)", &devices), ["none"]);
    rejected_at("tags:env%", 6, "`%`");
}

#[test]
fn tag_and_metadata_values_select_missing_keys_when_negated() {
    let devices = [
        named("prod", |d| d.tags = tags(&[("env", "prod")])),
        named("dev", |d| d.tags = tags(&[("env", "Dev")])),
        device("none"),
    ];
    assert_eq!(selected("tags.env:prod", &devices), ["prod"]);
    assert_eq!(selected("tags.env:dev", &devices), Vec::<String>::new());
    assert_eq!(selected("tags.env:DE%", &devices), ["dev"]);
    assert_eq!(selected("!tags.env:prod", &devices), ["dev", "none"]);
    assert_eq!(selected("!tags.env:%ro%", &devices), ["dev", "none"]);
    let m = named("m", |d| d.metadata = tags(&[("rack", "R1")]));
    assert!(hit("metadata.rack:R1", &m) && !hit("!metadata.rack:R1", &m));
    assert!(hit("!metadata.row:R1", &m));
    rejected_at("tags.a.b:x", 1, "invalid tags key");
    rejected_at(
        &format!("metadata.{}:x", "k".repeat(65)),
        1,
        "invalid metadata key",
    );
}

#[test]
fn discovery_sources_must_contain_all() {
    let devices = [
        named("both", |d| {
            d.discovery_sources = vec!["sweep".into(), "armis".into()]
        }),
        named("sweep", |d| d.discovery_sources = vec!["sweep".into()]),
        device("none"),
    ];
    assert_eq!(
        selected("discovery_sources:sweep", &devices),
        ["both", "sweep"]
    );
    assert_eq!(
        selected("discovery_sources:(sweep,armis)", &devices),
        ["both"]
    );
    assert_eq!(
        selected("!discovery_sources:(sweep,armis)", &devices),
        ["sweep", "none"]
    );
}

#[test]
fn uid_and_os_aliases() {
    let devices = [
        named("dev-1", |d| {
            d.os = Some("Linux".into());
            d.os_version = Some("6.1".into());
        }),
        device("dev-2"),
    ];
    assert_eq!(selected("uid:dev-1", &devices), ["dev-1"]);
    assert_eq!(selected("device_id:DEV-%", &devices), ["dev-1", "dev-2"]);
    assert_eq!(selected("!uid:dev-1", &devices), ["dev-2"]);
    assert_eq!(selected("os.name:Linux", &devices), ["dev-1"]);
    assert_eq!(selected("os.name:lin%", &devices), ["dev-1"]);
    // os.* select NULL when negated (SRQL's jsonb `IS NULL OR <>`).
    assert_eq!(selected("!os.name:Linux", &devices), ["dev-2"]);
    assert_eq!(selected("!os.version:6.1", &devices), ["dev-2"]);
    assert_eq!(
        normalized("os.name:Linux os.version:6.1"),
        "in:devices os:Linux os_version:6.1"
    );
}

#[test]
fn srql_fields_corral_does_not_have_are_rejected() {
    for (text, column) in [
        ("gateway_id:g1", 1),
        ("risk_level:high", 1),
        ("hostname:a type_id:3", 12),
        ("os.type:linux", 1),
        ("hw_info.serial_number:x", 1),
        ("deleted:true", 1),
        ("include_deleted:true", 1),
    ] {
        rejected_at(text, column, "not part of Corral's inventory");
    }
}

#[test]
fn quirk_1_null_is_the_text_null() {
    let p = parsed("hostname:null");
    assert!(
        p.warnings.iter().any(|w| w.contains("missing:hostname")),
        "{:?}",
        p.warnings
    );
    assert!(!hit("hostname:null", &device("x")));
    assert!(hit(
        "hostname:null",
        &named("n", |d| d.hostname = Some("null".into()))
    ));
}

#[test]
fn quirk_3_a_tilde_value_is_rejected_with_a_hint() {
    rejected_at("hostname:~\"^web\"", 10, "hostname~");
    rejected_at("in:devices hostname:~web", 21, "not a regex");
}

#[test]
fn quirk_4_tags_key_equals_value_is_rejected_with_a_hint() {
    rejected_at("tags:env=prod", 6, "tags.env:prod");
    rejected_at("tags:(a,env=prod)", 6, "key name");
}

#[test]
fn quirk_6_uniform_is_distinct_from_would_change_meaning() {
    let d = device("all-null");
    for skips in [
        "!hostname:x",
        "!ip:x",
        "!vendor_name:x",
        "!model:x",
        "!type:x",
        "!is_available:true",
    ] {
        assert!(!hit(skips, &d), "{skips} must not select NULL");
    }
    for selects in [
        "!mac:aa",
        "!tags.k:x",
        "!metadata.k:x",
        "!os.name:x",
        "!os.version:x",
        "!tags:k",
    ] {
        assert!(hit(selects, &d), "{selects} must select NULL");
    }
}

#[test]
fn quirk_7_discovery_sources_traps_are_rejected() {
    rejected_at("!discovery_sources:sweep", 20, "contains x");
    rejected_at("discovery_sources:%sw%", 19, "`%`");
    rejected_at("discovery_sources:>sweep", 19, "comparisons");
    rejected_at("discovery_sources:(sw%)", 19, "`%`");
}

#[test]
fn quirk_8_and_9_lists_and_empty_lists() {
    // Corral defines lists where SRQL rejects them: any.
    let d = named("a", |d| d.hostname = Some("web".into()));
    assert!(hit("hostname:(db,web)", &d));
    assert!(!hit("!hostname:(db,web)", &d));
    // An empty list applies no filter in SRQL; Corral rejects it.
    rejected_at("tags:()", 6, "empty list");
    rejected_at("hostname:[ , ]", 10, "empty list");
    let list: Vec<String> = (0..251).map(|i| i.to_string()).collect();
    rejected_at(&format!("uid:({})", list.join(",")), 5, "at most 250");
    assert_eq!(
        rule(&format!("uid:({})", list[..250].join(","))).condition_count(),
        1
    );
}

#[test]
fn quirk_10_shape_tokens_are_rejected() {
    for token in [
        "limit:10",
        "sort:hostname",
        "order:ip",
        "stats:count()",
        "time:last_7d",
        "timeframe:1h",
        "bucket:5m",
        "downsample:1h",
        "agg:avg",
        "series:x",
        "value_field:x",
        "rollup_stats:x",
        "window:5m",
        "bounded:true",
        "mode:x",
    ] {
        rejected_at(
            &format!("hostname:a {token}"),
            12,
            "shapes SRQL query results",
        );
    }
}

#[test]
fn quirk_11_parse_traps() {
    // An unbalanced quote would swallow the rest of the rule.
    rejected_at("hostname:o'brien is_available:true", 11, "unbalanced `'`");
    // Quoted, it is one value, as in SRQL.
    let d = named("o", |d| d.hostname = Some("o'brien".into()));
    assert!(hit("hostname:\"o'brien\"", &d));
    assert!(
        hit("hostname:o'brien'", &d),
        "SRQL strips the trailing quote"
    );
    rejected_at("ip:10.1.2.3/16", 4, "host bits");
    rejected_at("ip:10.0.0.0/33", 4, "CIDR");
    rejected_at("ip:10.0.0.1-fd00::1", 4, "range");
}

#[test]
fn quirk_12_only_the_rust_translator_counts() {
    // The Elixir matcher turns LIKE into "contains"; the translator anchors it.
    assert!(!hit(
        "hostname:web%",
        &named("x", |d| d.hostname = Some("my-web".into()))
    ));
}
