//! What `mqctl` prints: aligned tables for people, JSON for scripts (`--json`), and
//! timestamps as UTC dates. Everything goes through [`Output`], whose writes return
//! errors instead of panicking like `println!` does on a closed pipe.

use std::io::Write;

use serde::Serialize;

use super::CliError;
use broker_proto::api::MessageView;

/// Longest body shown in a table cell; `--json` prints bodies whole.
const BODY_CELL_CHARS: usize = 60;

/// The output mode and the writer.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Writes one line to stdout.
    ///
    /// # Errors
    /// stdout is closed or failed.
    pub fn line(&self, text: &str) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}")?;
        // Lines of `tail -f` must show up as they arrive, also through a pipe.
        stdout.flush()?;
        Ok(())
    }

    /// Writes `value` as pretty JSON.
    ///
    /// # Errors
    /// As [`Output::line`].
    pub fn json(&self, value: &impl Serialize) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        self.line(&text)
    }

    /// Writes `value` as one line of JSON (a stream of records, as `tail` prints).
    ///
    /// # Errors
    /// As [`Output::line`].
    pub fn json_line(&self, value: &impl Serialize) -> Result<(), CliError> {
        let text = serde_json::to_string(value).map_err(std::io::Error::other)?;
        self.line(&text)
    }

    /// Writes a table.
    ///
    /// # Errors
    /// As [`Output::line`].
    pub fn table(&self, table: &Table) -> Result<(), CliError> {
        for line in table.render() {
            self.line(&line)?;
        }
        Ok(())
    }

    /// Writes `value` as JSON with `--json`, else the table `table` builds.
    ///
    /// # Errors
    /// As [`Output::line`].
    pub fn either(
        &self,
        value: &impl Serialize,
        table: impl FnOnce() -> Table,
    ) -> Result<(), CliError> {
        if self.json {
            self.json(value)
        } else {
            self.table(&table())
        }
    }
}

/// A table: a header and rows of cells, printed with columns aligned to the widest
/// cell and separated by two spaces.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The lines of the table; the last column is not padded.
    pub fn render(&self) -> Vec<String> {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|cells| {
                let mut line = String::new();
                for (i, cell) in cells.iter().enumerate().take(columns) {
                    if i + 1 == columns {
                        line.push_str(cell);
                    } else {
                        line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                    }
                }
                line.trim_end().to_string()
            })
            .collect()
    }
}

/// A two-column "field  value" table for one record.
pub fn fields(pairs: Vec<(&str, String)>) -> Table {
    let mut table = Table::new(&["FIELD", "VALUE"]);
    for (name, value) in pairs {
        table.row(vec![name.to_string(), value]);
    }
    table
}

/// The header of [`message_row`].
pub const MESSAGE_HEADER: [&str; 8] = [
    "QUEUE",
    "OFFSET",
    "STORED",
    "MSG_ID",
    "TAGS",
    "KEYS",
    "PROPERTIES",
    "BODY",
];

/// One message as a table row; `group` prefixes the queue id when known.
pub fn message_row(group: Option<&str>, message: &MessageView) -> Vec<String> {
    let queue = match group {
        Some(group) => format!("{group}/{}", message.queue_id),
        None => message.queue_id.to_string(),
    };
    vec![
        queue,
        message.queue_offset.to_string(),
        utc(message.store_timestamp),
        message.msg_id.clone(),
        message.tags.clone().unwrap_or_default(),
        message.keys.join(","),
        message
            .properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        body_cell(message),
    ]
}

/// A message body for a table cell: one line, shortened, binary marked.
pub fn body_cell(message: &MessageView) -> String {
    let (text, binary) = match (&message.body, &message.body_base64) {
        (Some(body), _) => (body.as_str(), false),
        (None, Some(base64)) => (base64.as_str(), true),
        (None, None) => ("", false),
    };
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut cell: String = one_line.chars().take(BODY_CELL_CHARS).collect();
    if one_line.chars().count() > BODY_CELL_CHARS {
        cell.push('…');
    }
    if binary {
        format!("base64:{cell}")
    } else {
        cell
    }
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date: Howard Hinnant's
/// `civil_from_days`, restricted to dates after the epoch (store times are).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// An optional number as a cell: `-` when absent.
pub fn opt(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["A", "LONGER", "C"]);
        table.row(vec!["wide cell".into(), "1".into(), "x".into()]);
        assert_eq!(
            table.render(),
            ["A          LONGER  C", "wide cell  1       x"]
        );
    }
}
