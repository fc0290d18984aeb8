//! The license a Debian package states machine-readably: the `License:` of the `Files: *`
//! paragraph of a DEP-5 `usr/share/doc/{package}/copyright`, mapped to SPDX identifiers.
//!
//! Pure. Anything not machine-readable (a free-form copyright file, an unknown short name, an
//! exception clause) gives `None`, which the SBOM records as NOASSERTION.

/// The `Format:` line that marks a machine-readable (DEP-5) copyright file.
const DEP5_FORMAT_MARKER: &str = "copyright-format/1.0";

/// Debian short license names (lowercased) and their SPDX identifiers.
const DEBIAN_TO_SPDX: &[(&str, &str)] = &[
    ("apache-2.0", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("cc0-1.0", "CC0-1.0"),
    ("expat", "MIT"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-2.0", "GPL-2.0-only"),
    ("gpl-2.0+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("gpl-3.0+", "GPL-3.0-or-later"),
    ("isc", "ISC"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("mit", "MIT"),
    ("mpl-2.0", "MPL-2.0"),
    ("openssl", "OpenSSL"),
    ("zlib", "Zlib"),
];

/// The SPDX license expression a DEP-5 copyright file declares for `Files: *`, if any.
pub fn declared_license(copyright: &str) -> Option<String> {
    let mut paragraphs = copyright.split("\n\n").map(str::trim).filter(|p| !p.is_empty());
    let header = paragraphs.next()?;
    if !header
        .lines()
        .any(|line| line.starts_with("Format:") && line.contains(DEP5_FORMAT_MARKER))
    {
        return None;
    }
    let files_star = std::iter::once(header)
        .chain(paragraphs)
        .find(|paragraph| paragraph.lines().any(|line| field_value(line, "Files") == Some("*")))?;
    let license = files_star.lines().find_map(|line| field_value(line, "License"))?;
    to_spdx_expression(license)
}

fn field_value<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let (key, value) = line.split_once(':')?;
    (key.eq_ignore_ascii_case(field)).then(|| value.trim())
}

/// Maps a DEP-5 license line (`GPL-2+ or BSD-3-clause`) to SPDX, or `None` when any part is
/// unknown.
pub fn to_spdx_expression(license: &str) -> Option<String> {
    let mut out = Vec::new();
    for token in license.split_whitespace() {
        match token.to_ascii_lowercase().as_str() {
            "or" => out.push("OR".to_owned()),
            "and" => out.push("AND".to_owned()),
            name => {
                let name = name.trim_end_matches(',');
                let spdx = DEBIAN_TO_SPDX.iter().find(|(debian, _)| *debian == name)?.1;
                out.push(spdx.to_owned());
            }
        }
    }
    let well_formed = !out.is_empty()
        && out.iter().enumerate().all(|(index, token)| {
            let is_operator = token == "OR" || token == "AND";
            is_operator == (index % 2 == 1)
        })
        && out.len() % 2 == 1;
    well_formed.then(|| out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP5: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ethtool

Files: *
Copyright: 1998-2022 the authors
License: GPL-2

Files: debian/*
License: GPL-2+

License: GPL-2
 On Debian systems, the complete text is in /usr/share/common-licenses/GPL-2.
";

    #[test]
    fn reads_the_files_star_license() {
        assert_eq!(declared_license(DEP5).as_deref(), Some("GPL-2.0-only"));
        let dual = DEP5.replace(
            "License: GPL-2\n\nFiles: debian",
            "License: GPL-2+ or BSD-3-clause\n\nFiles: debian",
        );
        assert_eq!(
            declared_license(&dual).as_deref(),
            Some("GPL-2.0-or-later OR BSD-3-Clause")
        );
    }

    #[test]
    fn free_form_or_unknown_gives_none() {
        assert_eq!(
            declared_license("This work was packaged for Debian by someone.\n"),
            None
        );
        let exception = DEP5.replace(
            "License: GPL-2\n\nFiles: debian",
            "License: GPL-2+ with OpenSSL exception\n\nFiles: debian",
        );
        assert_eq!(declared_license(&exception), None);
        assert_eq!(to_spdx_expression("or GPL-2"), None);
        assert_eq!(to_spdx_expression("public-domain"), None);
    }
}
