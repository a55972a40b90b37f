//! The README's configuration table, generated from the settings' declarations.

use clap::Args;

use super::{DatabaseSettings, Settings};

/// Where the generated table begins and ends in README.md.
const BEGIN: &str = "<!-- BEGIN GENERATED: corral docs settings -->\n";
const END: &str = "<!-- END GENERATED -->";

/// Escapes what would break a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The table: one row per environment variable, in declaration order, then `RUST_LOG`.
pub fn markdown() -> String {
    let command =
        Settings::augment_args(DatabaseSettings::augment_args(clap::Command::new("corral")));
    let mut out = String::from("| Variable | Default | Meaning |\n|---|---|---|\n");
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env() else {
            continue;
        };
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = if default.is_empty() {
            "unset".to_string()
        } else {
            format!("`{}`", default.join(","))
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            env.to_string_lossy(),
            cell(&default),
            cell(&help)
        ));
    }
    out.push_str("| `RUST_LOG` | `info,sqlx=warn` | Log filter (tracing's `EnvFilter` syntax) |\n");
    out
}

/// `readme` with its generated table replaced (`None`: the markers are missing).
pub fn regenerate(readme: &str) -> Option<String> {
    let start = readme.find(BEGIN)? + BEGIN.len();
    let end = readme[start..].find(END)? + start;
    Some(format!(
        "{}{}{}",
        &readme[..start],
        markdown(),
        &readme[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI fails when README's table drifts from the settings. Regenerate with
    /// `cargo run -p corral --bin corral -- docs settings --write`.
    #[test]
    fn the_readme_table_matches_the_settings() {
        let readme = include_str!("../../../README.md");
        let regenerated = regenerate(readme).expect("README has the generated-table markers");
        assert!(
            regenerated == readme,
            "README.md's configuration table is stale: run `cargo run -p corral --bin corral -- docs settings --write`"
        );
    }

    #[test]
    fn every_setting_has_an_environment_variable_and_help() {
        let command =
            Settings::augment_args(DatabaseSettings::augment_args(clap::Command::new("corral")));
        for arg in command.get_arguments() {
            let name = arg.get_id().as_str();
            assert!(
                arg.get_env().is_some(),
                "{name} has no environment variable"
            );
            assert!(arg.get_help().is_some(), "{name} has no help");
        }
    }
}
