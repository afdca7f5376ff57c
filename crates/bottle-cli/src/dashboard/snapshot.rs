//! Snapshot files for the dashboard's rendering tests: a screen drawn on
//! ratatui's `TestBackend`, as text, compared with
//! `snapshots/NAME.txt` beside this file. A difference fails the test
//! with the lines that differ; `UPDATE_SNAPSHOTS=1` writes the files
//! instead (review them with `git diff`).

use ratatui::buffer::Buffer;

/// The text of `buffer`, a line per row, trailing blanks trimmed.
pub(crate) fn screen_text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let line: String =
            (area.left()..area.right()).filter_map(|x| buffer.cell((x, y))).map(|cell| cell.symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Fail unless `actual` is the text of snapshot `name` (or write it, with `UPDATE_SNAPSHOTS=1`).
pub(crate) fn check(name: &str, actual: &str) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dashboard/snapshots").join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| !v.is_empty()) {
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("creating the snapshots folder");
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("snapshot {} cannot be read ({e}); UPDATE_SNAPSHOTS=1 writes it. The screen:\n{actual}", path.display())
    });
    if expected == actual {
        return;
    }
    let (want, got): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut diff = String::new();
    for at in 0..want.len().max(got.len()) {
        let (w, g) = (want.get(at).copied(), got.get(at).copied());
        if w != g {
            diff.push_str(&format!("line {}:\n  - {}\n  + {}\n", at + 1, w.unwrap_or("(none)"), g.unwrap_or("(none)")));
        }
    }
    panic!(
        "the screen differs from snapshot {} (- snapshot, + drawn; UPDATE_SNAPSHOTS=1 rewrites it):\n{diff}\nthe drawn screen:\n{actual}",
        path.display()
    );
}
