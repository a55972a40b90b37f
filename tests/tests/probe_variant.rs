//! Adding an event variant must break the build of every reader that has to handle it.
//!
//! `corral-domain`'s test-only feature `probe-variant` adds `Probe {}` to `GroupEvent` and
//! `MembershipEvent` (the domain handles it in its own matches, so the domain compiles). This
//! test checks the readers with it, in a target directory of its own (the main build is not
//! invalidated), and asserts the check fails with a non-exhaustive match (E0004) in every file
//! of [`READERS`]: the list is the contract. A reader that grows a `_ =>` arm drops out of the
//! errors and fails this test.
//!
//! Membership readers that fold through `corral_domain::membership::fold` (the membership
//! projector, time travel's members) are covered by that fold's own exhaustive match, which
//! the domain must handle for the domain to compile at all. Readers in crates that depend on
//! `corral-projections` (the API's `subscriptions/watch.rs`, the workers) cannot be reached
//! while `corral-projections` fails to compile, so they are not in the list; they match
//! exhaustively all the same.

use std::path::Path;
use std::process::Command;

/// Every reader file that must fail to compile when a variant is added.
const READERS: &[&str] = &[
    "projections/src/group_tree/fold.rs",
    "projections/src/capabilities.rs",
    "projections/src/audit.rs",
    "projections/src/health/projector.rs",
    "projections/src/history/group_fold.rs",
    "projections/src/history/tree.rs",
    "projections/src/commands/follow_ups.rs",
];

#[test]
fn a_new_event_variant_breaks_the_build_of_every_reader_that_must_handle_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let target = root.join("target").join("probe-variant");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "check",
            "--keep-going",
            "-p",
            "corral-projections",
            "-p",
            "corral-api",
            "-p",
            "corral-workers",
            "--features",
            "corral-domain/probe-variant",
            "--message-format",
            "short",
        ])
        .output()
        .expect("run cargo check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the readers compiled with a variant none of them handles:\n{stderr}"
    );
    let missing: Vec<&str> = READERS
        .iter()
        .copied()
        .filter(|file| {
            !stderr
                .lines()
                .any(|l| l.starts_with(file) && l.contains("E0004"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "no non-exhaustive match (E0004) in {missing:?}: a wildcard arm swallows new variants there\n{stderr}"
    );
    // The domain itself must compile: every failure is a reader's.
    assert!(
        !stderr.lines().any(|l| l.starts_with("domain/")),
        "the domain does not compile with the probe:\n{stderr}"
    );
}
