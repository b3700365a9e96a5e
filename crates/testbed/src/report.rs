//! Helpers every benchmark needs: reading a command's output for the
//! report's header, and replacing one marked section of a document so that
//! several benchmarks can share a report file without overwriting each
//! other.

use std::path::Path;
use std::process::Command;

/// What `program args` prints, trimmed; empty when it cannot run.
pub fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `doc` with the text between the `start` and `end` marker lines replaced
/// by `body` (markers kept). `Ok(None)` when neither marker is there, so
/// the caller decides where a new section goes; `Err` when they are
/// unpaired or out of order, which a caller must not paper over.
pub fn replace_marked(
    doc: &str,
    start: &str,
    end: &str,
    body: &str,
) -> Result<Option<String>, String> {
    match (doc.find(start), doc.find(end)) {
        (Some(s), Some(e)) if s < e => {
            Ok(Some(format!("{}{start}\n{body}{}", &doc[..s], &doc[e..])))
        }
        (None, None) => Ok(None),
        _ => Err(format!(
            "the markers {start} and {end} are unpaired or out of order"
        )),
    }
}

/// Writes `body` between the markers in the file at `path`, leaving the rest
/// of the file as it is. A missing file reads as empty. When the markers
/// are missing, `place` gets the document and the marked section and
/// returns the new document, or `None` to refuse.
pub fn write_marked(
    path: &Path,
    start: &str,
    end: &str,
    body: &str,
    place: impl FnOnce(&str, &str) -> Option<String>,
) -> Result<(), String> {
    let doc = match std::fs::read_to_string(path) {
        Ok(doc) => doc,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let why = |why: &str| format!("{}: {why}; report not written", path.display());
    let updated = match replace_marked(&doc, start, end, body).map_err(|e| why(&e))? {
        Some(updated) => updated,
        None => {
            place(&doc, &format!("{start}\n{body}{end}")).ok_or_else(|| why("markers not found"))?
        }
    };
    std::fs::write(path, updated).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Writes `body` between the `<!-- name:begin -->` and `<!-- name:end -->`
/// markers of the file at `path`, the section of one benchmark; where the
/// markers are not there yet, the section is appended under `## heading`.
pub fn write_section(path: &Path, name: &str, heading: &str, body: &str) -> Result<(), String> {
    write_marked(
        path,
        &format!("<!-- {name}:begin -->"),
        &format!("<!-- {name}:end -->"),
        body,
        |doc, section| Some(format!("{doc}\n## {heading}\n\n{section}\n")),
    )
}

#[cfg(test)]
mod tests {
    use super::{replace_marked, write_section};

    const START: &str = "<!-- x:start -->";
    const END: &str = "<!-- x:end -->";

    #[test]
    fn replaces_between_the_markers_only() {
        let doc = format!("head\n{START}\nold\n{END}\ntail\n");
        assert_eq!(
            replace_marked(&doc, START, END, "new\n").unwrap(),
            Some(format!("head\n{START}\nnew\n{END}\ntail\n"))
        );
        assert_eq!(replace_marked("no markers", START, END, "x"), Ok(None));
        for broken in [
            format!("{START} only"),
            format!("{END} only"),
            format!("{END}\n{START}"),
        ] {
            assert!(
                replace_marked(&broken, START, END, "x").is_err(),
                "{broken}"
            );
        }
    }

    #[test]
    fn a_section_is_appended_under_its_heading_then_replaced() {
        let path = std::env::temp_dir().join(format!("testbed-report-{}.md", std::process::id()));
        std::fs::write(&path, "# Benchmarks\n").unwrap();
        write_section(&path, "x", "X", "one\n").unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        write_section(&path, "x", "X", "two\n").unwrap();
        let second = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let (begin, end) = ("<!-- x:begin -->", "<!-- x:end -->");
        assert_eq!(
            first,
            format!("# Benchmarks\n\n## X\n\n{begin}\none\n{end}\n")
        );
        assert_eq!(
            second,
            format!("# Benchmarks\n\n## X\n\n{begin}\ntwo\n{end}\n")
        );
    }
}
