//! Tidy checks on the tree itself: no function in the shipped code is longer than a screen, and
//! ARCHITECTURE.md stays a true, one-screen map (every path it names exists, every module of
//! `src/` and `xtask/src/` is named there).

use std::path::{Path, PathBuf};

use crate::support::project_root;

/// The longest function allowed in `src/` and `xtask/src/`, from its `fn` line to its closing brace.
const MAX_FUNCTION_LINES: usize = 80;

/// ARCHITECTURE.md is one screen: at most this many lines of at most this many characters.
const MAX_ARCHITECTURE_LINES: usize = 60;
const MAX_ARCHITECTURE_WIDTH: usize = 120;

/// The shipped code: the consumer library and the xtask pipeline.
const CODE_DIRS: [&str; 2] = ["src", "xtask/src"];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("reading {}: {e}", folder.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// True for a line that starts a function item (`fn`, after any visibility and qualifiers).
fn starts_function(trimmed: &str) -> bool {
    let mut rest = trimmed;
    loop {
        let next = [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "async ",
            "unsafe ",
            "extern \"C\" ",
        ]
        .iter()
        .find_map(|prefix| rest.strip_prefix(prefix));
        match next {
            Some(shorter) => rest = shorter,
            None => return rest.starts_with("fn "),
        }
    }
}

/// `(first line number, length in lines, name)` of every function body in `text` (rustfmt
/// layout: the body closes with a `}` at the indentation of its `fn` line).
fn function_lengths(text: &str) -> Vec<(usize, usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if !starts_function(trimmed) {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let name: String = trimmed[trimmed.find("fn ").unwrap() + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // A declaration without a body (a trait method) ends with `;` before any `{`.
        let Some(open) = (start..lines.len()).find(|&i| lines[i].contains('{') || lines[i].trim_end().ends_with(';'))
        else {
            continue;
        };
        if !lines[open].contains('{') {
            continue;
        }
        if lines[open].trim_end().ends_with('}') && open == start {
            found.push((start + 1, 1, name));
            continue;
        }
        let close = (open + 1..lines.len())
            .find(|&i| {
                let l = lines[i];
                l.len() > indent && l[..indent].trim().is_empty() && l[indent..].starts_with('}')
            })
            .unwrap_or_else(|| panic!("no closing brace for fn {name} at line {}", start + 1));
        found.push((start + 1, close - start + 1, name));
    }
    found
}

#[test]
fn no_function_in_src_or_xtask_src_is_over_80_lines() {
    let mut long = Vec::new();
    for dir in CODE_DIRS {
        for file in rust_files(&project_root().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (line, length, name) in function_lengths(&text) {
                if length > MAX_FUNCTION_LINES {
                    let path = file.strip_prefix(project_root()).unwrap().display().to_string();
                    long.push(format!("{path}:{line} fn {name}: {length} lines"));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them along the steps their docs list):\n  {}",
        long.join("\n  ")
    );
}

#[test]
fn the_function_length_scanner_measures_what_it_should() {
    let text = "fn short() {}\n\npub(crate) fn two(\n    a: u8,\n) -> u8 {\n    a\n}\n\ntrait T {\n    fn declared(&self);\n    \
                fn defaulted(&self) {\n        let _ = 1;\n    }\n}\n";
    let found = function_lengths(text);
    let summary: Vec<(usize, usize, &str)> = found.iter().map(|(l, n, name)| (*l, *n, name.as_str())).collect();
    assert_eq!(summary, vec![(1, 1, "short"), (3, 5, "two"), (11, 3, "defaulted")]);
}

fn architecture() -> String {
    std::fs::read_to_string(project_root().join("ARCHITECTURE.md")).unwrap()
}

#[test]
fn architecture_is_one_screen() {
    let text = architecture();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() <= MAX_ARCHITECTURE_LINES,
        "ARCHITECTURE.md has {} lines; one screen is {MAX_ARCHITECTURE_LINES}",
        lines.len()
    );
    let wide: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.chars().count() > MAX_ARCHITECTURE_WIDTH)
        .map(|(i, line)| format!("line {}: {} characters", i + 1, line.chars().count()))
        .collect();
    assert!(
        wide.is_empty(),
        "ARCHITECTURE.md lines over {MAX_ARCHITECTURE_WIDTH} characters:\n  {}",
        wide.join("\n  ")
    );
}

/// The `backticked` words of `text` that are repository paths: their first segment is a folder
/// or file at the repository root that git tracks (not an output folder such as build/ or dist/).
fn named_repository_paths(text: &str) -> Vec<String> {
    let ignored = std::fs::read_to_string(project_root().join(".gitignore")).unwrap();
    let outputs: Vec<&str> = ignored.lines().map(|l| l.trim().trim_matches('/')).collect();
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| !word.contains(|c: char| c.is_whitespace() || "{}*<>…$".contains(c)))
        .filter(|word| word.contains('/') && !word.contains("://"))
        .filter(|word| {
            let first = word.split('/').next().unwrap_or_default();
            !first.is_empty() && !outputs.contains(&first) && project_root().join(first).exists()
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_path_architecture_names_exists() {
    let text = architecture();
    let paths = named_repository_paths(&text);
    assert!(
        paths.len() >= 10,
        "ARCHITECTURE.md names too few paths to be a map: {paths:?}"
    );
    let missing: Vec<&String> = paths.iter().filter(|p| !project_root().join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}

/// True when `line` names the folder `dir` (ending in `/`) itself, not only a folder below it.
fn names_folder(line: &str, dir: &str) -> bool {
    line.match_indices(dir).any(|(at, _)| {
        line[at + dir.len()..]
            .chars()
            .next()
            .map_or(true, |c| !(c.is_alphanumeric() || c == '_' || c == '-'))
    })
}

/// True when `line` names the file `name` as a word (`mod.rs`, not `xmod.rs`).
fn names_file(line: &str, name: &str) -> bool {
    line.match_indices(name).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        before.map_or(true, |c| !(c.is_alphanumeric() || c == '_'))
    })
}

#[test]
fn every_module_is_named_in_architecture() {
    let text = architecture();
    let mut unnamed = Vec::new();
    for dir in CODE_DIRS {
        for file in rust_files(&project_root().join(dir)) {
            let relative = file.strip_prefix(project_root()).unwrap();
            let path = relative.display().to_string();
            let folder = format!("{}/", relative.parent().unwrap().display());
            let name = relative.file_name().unwrap().to_string_lossy().into_owned();
            let named = text.contains(&path)
                || text
                    .lines()
                    .any(|line| names_folder(line, &folder) && names_file(line, &name));
            if !named {
                unnamed.push(path);
            }
        }
    }
    assert!(
        unnamed.is_empty(),
        "modules ARCHITECTURE.md does not name (by path, or by file name on a line naming its folder):\n  {}",
        unnamed.join("\n  ")
    );
}

#[test]
fn the_architecture_matchers_tell_folders_and_files_apart() {
    assert!(names_folder("`xtask/src/` (`util.rs`)", "xtask/src/"));
    assert!(!names_folder("`xtask/src/kernel/` (`util.rs`)", "xtask/src/"));
    assert!(names_file("(`mod.rs`, `source.rs`)", "source.rs"));
    assert!(!names_file("(`xsource.rs`)", "source.rs"));
    let paths =
        named_repository_paths("`xtask/src/flags.rs`, `build/x86_64/kernel`, `cargo xtask dist`, `dist/{arch}/`");
    assert_eq!(paths, vec!["xtask/src/flags.rs".to_owned()]);
}
