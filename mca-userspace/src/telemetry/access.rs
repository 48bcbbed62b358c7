//! Access-log lines, formatted directly into the log buffer: one per request makes them the
//! hottest log line by far, and tracing's general formatter (a visitor per field, every value
//! through `Debug`) cost a tenth of MCA's CPU at load. The lines look exactly as tracing's
//! text and JSON formatters print an event of target `mca::access`, and the `MCA_LOG` filter
//! still decides whether they are written.

use std::{io::Write, sync::OnceLock};

use super::{LogFormat, writer::Batched};

/// The target access-log lines are written under.
pub const TARGET: &str = "mca::access";

/// Where access-log lines go, once logging is set up.
static SINK: OnceLock<(Batched<std::io::Stderr>, LogFormat)> = OnceLock::new();

/// Sends access-log lines to `writer` in `format`.
pub(super) fn install(writer: Batched<std::io::Stderr>, format: LogFormat) {
    let _ = SINK.set((writer, format));
}

/// A field's value.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// Printed as it is in text (`verb=get`) unless it holds a space, a quote, a backslash or
    /// a control character (a client can put those in a path), then quoted and escaped so a
    /// value can never end the line or forge a field; a string in JSON.
    Raw(&'a str),
    /// Quoted in text (`error="..."`), a string in JSON.
    Quoted(&'a str),
    /// A number.
    Number(u64),
}

/// Whether access-log lines are written: logging is set up and the filter lets `mca::access`
/// through at info. Callers check before preparing a line's fields.
pub fn enabled() -> bool {
    SINK.get().is_some() && tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// Writes one access-log line with `fields` (if logging is set up).
pub fn write(message: &str, fields: &[(&str, Value<'_>)]) {
    let Some((writer, format)) = SINK.get() else {
        return;
    };
    use tracing_subscriber::fmt::MakeWriter;
    let mut line = Vec::with_capacity(512);
    format_line(
        &mut line,
        *format,
        time::OffsetDateTime::now_utc(),
        message,
        fields,
    );
    let _ = writer.make_writer().write_all(&line);
}

fn format_line(
    out: &mut Vec<u8>,
    format: LogFormat,
    now: time::OffsetDateTime,
    message: &str,
    fields: &[(&str, Value<'_>)],
) {
    let timestamp = format_args!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    );
    match format {
        LogFormat::Text => {
            let _ = write!(out, "{timestamp}  INFO {TARGET}: {message}");
            for (name, value) in fields {
                let _ = match value {
                    Value::Raw(text) if !needs_quotes(text) => write!(out, " {name}={text}"),
                    Value::Raw(text) | Value::Quoted(text) => write!(out, " {name}={text:?}"),
                    Value::Number(number) => write!(out, " {name}={number}"),
                };
            }
        }
        LogFormat::Json => {
            let _ = write!(
                out,
                "{{\"timestamp\":\"{timestamp}\",\"level\":\"INFO\",\"message\":"
            );
            json_string(out, message);
            for (name, value) in fields {
                let _ = write!(out, ",\"{name}\":");
                match value {
                    Value::Raw(text) | Value::Quoted(text) => json_string(out, text),
                    Value::Number(number) => {
                        let _ = write!(out, "{number}");
                    }
                }
            }
            let _ = write!(out, ",\"target\":\"{TARGET}\"}}");
        }
    }
    out.push(b'\n');
}

/// Whether a raw value would be misread in a `key=value` line.
fn needs_quotes(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '='))
}

fn json_string(out: &mut Vec<u8>, text: &str) {
    // A `&str` always serializes.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: [(&str, Value<'_>); 3] = [
        ("verb", Value::Raw("get")),
        ("status", Value::Number(200)),
        ("error", Value::Quoted("said \"no\"")),
    ];

    fn at() -> time::OffsetDateTime {
        // 2026-11-26T02:19:22.769427Z
        time::OffsetDateTime::from_unix_timestamp_nanos(1_795_659_562_769_427_000).unwrap()
    }

    #[test]
    fn text_lines_look_like_tracings() {
        let mut out = Vec::new();
        format_line(&mut out, LogFormat::Text, at(), "request", &FIELDS);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-26T02:19:22.769427Z  INFO mca::access: request verb=get status=200 \
             error=\"said \\\"no\\\"\"\n"
        );
    }

    #[test]
    fn raw_values_a_client_could_shape_are_quoted_in_text() {
        let mut out = Vec::new();
        let forged = "/api/v1/namespaces/a b\n2026-01-01T00:00:00Z  INFO fake=\"1\"";
        format_line(
            &mut out,
            LogFormat::Text,
            at(),
            "request",
            &[("path", Value::Raw(forged))],
        );
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.ends_with(&format!(" path={forged:?}\n")), "{line}");
    }

    #[test]
    fn json_lines_are_one_object_each_with_numbers_as_numbers() {
        let mut out = Vec::new();
        format_line(&mut out, LogFormat::Json, at(), "request", &FIELDS);
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "timestamp": "2026-11-26T02:19:22.769427Z", "level": "INFO",
                "message": "request", "verb": "get", "status": 200, "error": "said \"no\"",
                "target": "mca::access",
            })
        );
    }
}
