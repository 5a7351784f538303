//! Printing of list and describe results: aligned tables for people, JSON and YAML for scripts.
//!
//! JSON and YAML print the objects as the SC stores them (spec and status side by side), so a
//! script sees every field; tables show a summary chosen per command. The YAML writer covers the
//! JSON data model only (what `serde_json::Value` holds), quoting every string that YAML could
//! read as something else.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::args::OutputFormat;

/// Rows of text under a header, printed with columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    /// Appends a row; missing cells print empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, header first, ending in a new line.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|header| header.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        let header: Vec<String> = self.headers.iter().map(|header| header.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (index, width) in widths.iter().enumerate() {
                let cell = row.get(index).map_or("", String::as_str);
                if index + 1 == widths.len() {
                    line.push_str(cell);
                } else {
                    let padding = width - cell.chars().count().min(*width);
                    let _ = write!(line, "{cell}{}  ", " ".repeat(padding));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Prints `value` as JSON or YAML, or the text `table` renders (for people).
pub fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let text = match format {
        OutputFormat::Table => table(),
        OutputFormat::Json => {
            let mut text = serde_json::to_string_pretty(value)?;
            text.push('\n');
            text
        }
        OutputFormat::Yaml => to_yaml(&serde_json::to_value(value)?),
    };
    print!("{text}");
    Ok(())
}

/// Renders a JSON value as a YAML document (block style).
pub fn to_yaml(value: &Value) -> String {
    let mut text = String::new();
    match value {
        Value::Array(items) if !items.is_empty() => write_sequence(&mut text, items, 0),
        Value::Object(fields) if !fields.is_empty() => write_mapping(&mut text, fields, 0),
        scalar => {
            text.push_str(&yaml_scalar(scalar));
            text.push('\n');
        }
    }
    text
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => !fields.is_empty(),
        _ => false,
    }
}

fn write_mapping(text: &mut String, fields: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in fields {
        let key = yaml_string(key);
        let pad = " ".repeat(indent);
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                let _ = writeln!(text, "{pad}{key}:");
                write_mapping(text, inner, indent + 2);
            }
            Value::Array(items) if !items.is_empty() => {
                let _ = writeln!(text, "{pad}{key}:");
                write_sequence(text, items, indent);
            }
            scalar => {
                let _ = writeln!(text, "{pad}{key}: {}", yaml_scalar(scalar));
            }
        }
    }
}

fn write_sequence(text: &mut String, items: &[Value], indent: usize) {
    let pad = " ".repeat(indent);
    for item in items {
        if !is_block(item) {
            let _ = writeln!(text, "{pad}- {}", yaml_scalar(item));
            continue;
        }
        // Render the item one level deeper, then put the dash on its first line.
        let mut inner = String::new();
        match item {
            Value::Object(fields) => write_mapping(&mut inner, fields, indent + 2),
            Value::Array(nested) => write_sequence(&mut inner, nested, indent + 2),
            _ => {}
        }
        let mut lines = inner.lines();
        if let Some(first) = lines.next() {
            let _ = writeln!(text, "{pad}- {}", &first[(indent + 2).min(first.len())..]);
        }
        for line in lines {
            let _ = writeln!(text, "{line}");
        }
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(string) => yaml_string(string),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string as a YAML scalar: plain when that reads back as the same string, else JSON-quoted
/// (a JSON string is a valid YAML double-quoted scalar).
fn yaml_string(string: &str) -> String {
    let reserved = ["null", "true", "false", "yes", "no", "on", "off", "~", ""];
    let plain_safe = string
        .chars()
        .all(|character| character.is_ascii_alphanumeric() || "._-/".contains(character))
        && !reserved.iter().any(|word| word.eq_ignore_ascii_case(string))
        && string.parse::<f64>().is_err()
        && !string.starts_with(['-', '.']);
    if plain_safe {
        string.to_owned()
    } else {
        Value::String(string.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["NAME", "PARTITIONS"]);
        table.row(vec!["a-long-name".into(), "3".into()]);
        table.row(vec!["b".into(), "12".into()]);
        assert_eq!(table.render(), "NAME         PARTITIONS\na-long-name  3\nb            12\n");
    }

    #[test]
    fn yaml_of_nested_values() {
        let value = json!({
            "name": "orders",
            "spec": {"partitions": 3, "retention": null, "tags": ["a", "true"]},
            "list": [{"id": 1, "ok": true}, {"id": 2, "ok": false}],
            "empty": []
        });
        let yaml = to_yaml(&value);
        assert_eq!(
            yaml,
            "empty: []\nlist:\n- id: 1\n  ok: true\n- id: 2\n  ok: false\nname: orders\n\
             spec:\n  partitions: 3\n  retention: null\n  tags:\n  - a\n  - \"true\"\n"
        );
    }

    #[test]
    fn yaml_quotes_ambiguous_strings() {
        assert_eq!(yaml_string("123"), "\"123\"");
        assert_eq!(yaml_string("yes"), "\"yes\"");
        assert_eq!(yaml_string("a: b"), "\"a: b\"");
        assert_eq!(yaml_string("-x"), "\"-x\"");
        assert_eq!(yaml_string("web-logs"), "web-logs");
    }
}
