//! Kernel config fragments and the check that every fragment option survived configuration.
//!
//! Pure functions over text: parses fragment files (`CONFIG_X=y`, `# CONFIG_X is not set`) and a
//! final `.config`, and lists every fragment option the final configuration dropped or changed.
//! Kconfig silently drops an option whose dependency is off; this check is what turns that into a
//! build failure naming the option.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// The prefix every Kconfig symbol carries in a `.config` file.
const SYMBOL_PREFIX: &str = "CONFIG_";

/// One option a fragment asks for, with where it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentOption {
    /// The symbol, with its `CONFIG_` prefix.
    pub name: String,
    /// The wanted value (`y`, `m`, a number, a quoted string); `None` means "is not set" (`=n` too).
    pub value: Option<String>,
    /// `file:line` of the request, for the error message.
    pub origin: String,
}

/// Parses one fragment file. `origin` names the file in errors and in each option's origin.
///
/// Blank lines and `#` comments are skipped, except `# CONFIG_X is not set`, which asks for X off.
/// Anything else that is not `CONFIG_X=value` is an error naming the line.
pub fn parse_fragment(origin: &str, text: &str) -> Result<Vec<FragmentOption>> {
    let mut options = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line = raw_line.trim();
        let at = format!("{origin}:{}", index + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(name) = not_set_symbol(line) {
            options.push(FragmentOption {
                name: name.to_owned(),
                value: None,
                origin: at,
            });
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            bail!("{at}: `{line}` is neither `CONFIG_NAME=value` nor `# CONFIG_NAME is not set`");
        };
        if !is_symbol(name) || value.is_empty() {
            bail!("{at}: `{line}` is neither `CONFIG_NAME=value` nor `# CONFIG_NAME is not set`");
        }
        options.push(FragmentOption {
            name: name.to_owned(),
            value: (value != "n").then(|| value.to_owned()),
            origin: at,
        });
    }
    Ok(options)
}

/// Parses a final `.config`: each symbol to its value, `None` for `# CONFIG_X is not set`.
/// Symbols the file does not mention at all are absent from the map.
pub fn parse_config(text: &str) -> BTreeMap<String, Option<String>> {
    let mut config = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = not_set_symbol(line) {
            config.insert(name.to_owned(), None);
        } else if let Some((name, value)) = line.split_once('=').filter(|(name, _)| is_symbol(name)) {
            config.insert(name.to_owned(), Some(value.to_owned()));
        }
    }
    config
}

/// Every fragment option the final configuration does not honour, one sentence each.
///
/// When fragments set the same symbol twice the later one wins, as in `merge_config.sh`.
/// An empty list means every option made it through.
pub fn unmet_options(options: &[FragmentOption], config: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut wanted: BTreeMap<&str, &FragmentOption> = BTreeMap::new();
    for option in options {
        wanted.insert(&option.name, option);
    }
    let mut problems = Vec::new();
    // Report in fragment order, so the messages follow the files.
    for option in options {
        if !std::ptr::eq(wanted[option.name.as_str()], option) {
            continue;
        }
        let asked = describe(&option.name, option.value.as_deref());
        match (config.get(&option.name), option.value.as_deref()) {
            (Some(actual), _) if actual.as_deref() == option.value.as_deref() => {}
            // A symbol off and a symbol Kconfig never wrote are both "not set".
            (None, None) => {}
            (None, Some(_)) => problems.push(format!(
                "{asked} ({}): the final .config does not have {} at all (no such symbol in this kernel, \
                 or the menu that holds it is off)",
                option.origin, option.name
            )),
            (Some(actual), _) => problems.push(format!(
                "{asked} ({}): the final .config has {} instead (a dependency is off, or another \
                 option overrides it)",
                option.origin,
                describe(&option.name, actual.as_deref())
            )),
        }
    }
    problems
}

/// `# CONFIG_X is not set` → `Some("CONFIG_X")`.
fn not_set_symbol(line: &str) -> Option<&str> {
    let name = line.strip_prefix("# ")?.strip_suffix(" is not set")?;
    is_symbol(name).then_some(name)
}

/// Whether `name` is a Kconfig symbol as `.config` spells it.
fn is_symbol(name: &str) -> bool {
    name.strip_prefix(SYMBOL_PREFIX)
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// An option as a `.config` line would show it.
fn describe(name: &str, value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{name}={value}"),
        None => format!("{name} not set"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAGMENT: &str = r#"
# A comment line.
CONFIG_EROFS_FS=y
# CONFIG_MODULES is not set
CONFIG_SOUND=n
CONFIG_CMDLINE="console=ttyS0"
CONFIG_LOG_BUF_SHIFT=14
"#;

    const FINAL_CONFIG: &str = r#"
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_EROFS_FS=y
# CONFIG_MODULES is not set
CONFIG_CMDLINE="console=ttyS0"
CONFIG_LOG_BUF_SHIFT=14
"#;

    fn fragment() -> Vec<FragmentOption> {
        parse_fragment("common.config", FRAGMENT).unwrap()
    }

    /// The fragment's unmet options when the final config has `instead` where it had `line`.
    fn problems_with(line: &str, instead: &str) -> Vec<String> {
        assert!(FINAL_CONFIG.contains(line), "the final config has no {line:?}");
        unmet_options(&fragment(), &parse_config(&FINAL_CONFIG.replace(line, instead)))
    }

    /// Like [`problems_with`], for a change that must give exactly one problem: that problem.
    fn the_one_problem_with(line: &str, instead: &str) -> String {
        let problems = problems_with(line, instead);
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems.into_iter().next().expect("one problem")
    }

    #[test]
    fn parses_values_not_set_and_origins() {
        let options = fragment();
        assert_eq!(options.len(), 5);
        assert_eq!(
            options[0],
            FragmentOption {
                name: "CONFIG_EROFS_FS".into(),
                value: Some("y".into()),
                origin: "common.config:3".into()
            }
        );
        assert_eq!(options[1].value, None);
        assert_eq!(options[2].value, None, "=n means not set");
        assert_eq!(options[3].value.as_deref(), Some("\"console=ttyS0\""));
    }

    #[test]
    fn a_fully_met_fragment_has_no_problems() {
        assert_eq!(
            unmet_options(&fragment(), &parse_config(FINAL_CONFIG)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_dropped_option_is_named() {
        assert_eq!(
            problems_with("CONFIG_EROFS_FS=y", "# CONFIG_EROFS_FS is not set"),
            [
                "CONFIG_EROFS_FS=y (common.config:3): the final .config has CONFIG_EROFS_FS not set instead \
              (a dependency is off, or another option overrides it)"
            ]
        );
    }

    #[test]
    fn an_unknown_symbol_is_named() {
        let options = parse_fragment("extra.config", "CONFIG_NO_SUCH_THING=y\n").unwrap();
        assert_eq!(
            unmet_options(&options, &parse_config(FINAL_CONFIG)),
            [
                "CONFIG_NO_SUCH_THING=y (extra.config:1): the final .config does not have CONFIG_NO_SUCH_THING \
              at all (no such symbol in this kernel, or the menu that holds it is off)"
            ]
        );
    }

    #[test]
    fn a_changed_value_is_named() {
        let problem = the_one_problem_with("CONFIG_LOG_BUF_SHIFT=14", "CONFIG_LOG_BUF_SHIFT=17");
        let expected = "CONFIG_LOG_BUF_SHIFT=14 (common.config:7): the final .config has CONFIG_LOG_BUF_SHIFT=17";
        assert!(problem.starts_with(expected), "{problem}");
    }

    #[test]
    fn a_module_where_builtin_was_asked_is_named() {
        let problems = problems_with("CONFIG_EROFS_FS=y", "CONFIG_EROFS_FS=m");
        assert!(problems[0].contains("has CONFIG_EROFS_FS=m instead"), "{problems:?}");
    }

    #[test]
    fn an_option_asked_on_but_off_is_reported_and_off_but_on_too() {
        let problem = the_one_problem_with("# CONFIG_MODULES is not set", "CONFIG_MODULES=y");
        assert!(
            problem.starts_with("CONFIG_MODULES not set (common.config:4)"),
            "{problem}"
        );
    }

    #[test]
    fn the_later_fragment_wins() {
        let mut options = fragment();
        options.extend(parse_fragment("arm64.config", "CONFIG_LOG_BUF_SHIFT=17\n").unwrap());
        let config = parse_config(&FINAL_CONFIG.replace("CONFIG_LOG_BUF_SHIFT=14", "CONFIG_LOG_BUF_SHIFT=17"));
        assert_eq!(unmet_options(&options, &config), Vec::<String>::new());
    }

    #[test]
    fn garbage_lines_are_rejected_with_their_place() {
        let err = parse_fragment("x.config", "CONFIG_A=y\nEROFS=y\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.config:2: `EROFS=y` is neither `CONFIG_NAME=value` nor `# CONFIG_NAME is not set`"
        );
        assert!(parse_fragment("x.config", "CONFIG_A=\n").is_err());
    }
}
