//! `cargo xtask schema`: writes (or with `--check`, compares) the JSON Schema of manifest.json,
//! generated from the library's types, at `manifests/manifest.schema.json`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use boot_assets::Manifest;
use xshell::Shell;

use crate::{flags, util};

/// Where the checked-in schema lives, relative to the repository root.
const SCHEMA_PATH: &str = "manifests/manifest.schema.json";

impl flags::Schema {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let path = schema_path();
        let generated = generate();
        if self.check {
            let current = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            if current != generated {
                bail!(
                    "{} is out of date with the manifest types: run `cargo xtask schema` and commit it",
                    path.display()
                );
            }
            eprintln!("schema: {} is current", path.display());
        } else {
            util::write_atomic(&path, generated.as_bytes())?;
            eprintln!("schema: wrote {}", path.display());
        }
        Ok(())
    }
}

/// The checked-in schema's path.
pub fn schema_path() -> PathBuf {
    util::project_root().join(SCHEMA_PATH)
}

/// The schema of manifest.json as pretty JSON with a trailing newline.
pub fn generate() -> String {
    let schema = schemars::schema_for!(Manifest);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_schema_is_current() {
        let current = std::fs::read_to_string(schema_path()).unwrap_or_default();
        assert!(
            current == generate(),
            "{SCHEMA_PATH} is out of date with the manifest types: run `cargo xtask schema` and commit it"
        );
    }
}
