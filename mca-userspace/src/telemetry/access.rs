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

/// Writes one access-log line with `fields` (if logging is set up), formatted straight into
/// the log buffer.
pub fn write(message: &str, fields: &[(&str, Value<'_>)]) {
    let Some((writer, format)) = SINK.get() else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    writer.append(|out| format_line(out, *format, now, message, fields));
}

/// Formats a line byte by byte rather than through `core::fmt`, which was half of what a line
/// cost; the output is what the `write!` of each part would give.
fn format_line(
    out: &mut Vec<u8>,
    format: LogFormat,
    now: time::OffsetDateTime,
    message: &str,
    fields: &[(&str, Value<'_>)],
) {
    match format {
        LogFormat::Text => {
            timestamp(out, now);
            out.extend_from_slice(b"  INFO ");
            out.extend_from_slice(TARGET.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(message.as_bytes());
            for (name, value) in fields {
                out.push(b' ');
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                match value {
                    Value::Raw(text) if !needs_quotes(text) => {
                        out.extend_from_slice(text.as_bytes())
                    }
                    Value::Raw(text) | Value::Quoted(text) => debug_quoted(out, text),
                    Value::Number(number) => number_into(out, *number),
                }
            }
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(out, now);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":");
            json_string(out, message);
            for (name, value) in fields {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                match value {
                    Value::Raw(text) | Value::Quoted(text) => json_string(out, text),
                    Value::Number(number) => number_into(out, *number),
                }
            }
            out.extend_from_slice(b",\"target\":\"");
            out.extend_from_slice(TARGET.as_bytes());
            out.extend_from_slice(b"\"}");
        }
    }
    out.push(b'\n');
}

/// `2026-11-26T02:19:22.769427Z`, as tracing prints it.
fn timestamp(out: &mut Vec<u8>, now: time::OffsetDateTime) {
    match u32::try_from(now.year()) {
        Ok(year) if year <= 9999 => digits(out, year, 4),
        _ => {
            let _ = write!(out, "{:04}", now.year());
        }
    }
    out.push(b'-');
    digits(out, u8::from(now.month()).into(), 2);
    out.push(b'-');
    digits(out, now.day().into(), 2);
    out.push(b'T');
    digits(out, now.hour().into(), 2);
    out.push(b':');
    digits(out, now.minute().into(), 2);
    out.push(b':');
    digits(out, now.second().into(), 2);
    out.push(b'.');
    digits(out, now.microsecond(), 6);
    out.push(b'Z');
}

/// `value` in exactly `width` decimal digits, zero-padded (`value` has no more).
fn digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn number_into(out: &mut Vec<u8>, number: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
}

/// Whether a raw value would be misread in a `key=value` line.
fn needs_quotes(text: &str) -> bool {
    let plain = |b: &u8| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'=');
    !text.as_bytes().iter().all(plain)
        && text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '='))
}

/// `text` quoted and escaped as Rust's `Debug` prints a string (which is what tracing's text
/// format shows), printable ASCII without quotes or backslashes copied as it is.
fn debug_quoted(out: &mut Vec<u8>, text: &str) {
    let plain = |b: &u8| matches!(b, b' '..=b'~') && !matches!(b, b'"' | b'\\');
    if text.as_bytes().iter().all(plain) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{text:?}");
    }
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

    /// What `core::fmt` prints for each part, which the byte-wise formatter must equal.
    fn by_fmt(now: time::OffsetDateTime, fields: &[(&str, Value<'_>)]) -> String {
        let mut line = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z  INFO {TARGET}: request",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.microsecond()
        );
        for (name, value) in fields {
            line += &match value {
                Value::Raw(text)
                    if !text.chars().any(|c| {
                        c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '=')
                    }) =>
                {
                    format!(" {name}={text}")
                }
                Value::Raw(text) | Value::Quoted(text) => format!(" {name}={text:?}"),
                Value::Number(number) => format!(" {name}={number}"),
            };
        }
        line + "\n"
    }

    #[test]
    fn text_lines_are_what_core_fmt_would_print() {
        let texts = [
            "",
            "get",
            "/api/v1/pods?x=1",
            "a b",
            "tab\there",
            "quote\"d",
            "back\\slash",
            "it's",
            "caf\u{e9}",
            "nbsp\u{a0}x",
            "c1\u{85}",
            "bell\u{7}",
            "\u{200b}zero-width",
            "emoji \u{1f600}",
            "combining e\u{301}",
            "\u{7f}",
            "~!@#$%^&*()_+",
        ];
        let times = [
            at(),
            time::OffsetDateTime::UNIX_EPOCH,
            time::OffsetDateTime::from_unix_timestamp(253_402_300_799).unwrap(), // 9999-12-31
        ];
        for now in times {
            for text in texts {
                for number in [0, 7, 10, 99_999, u64::MAX] {
                    let fields = [
                        ("raw", Value::Raw(text)),
                        ("quoted", Value::Quoted(text)),
                        ("number", Value::Number(number)),
                    ];
                    let mut out = Vec::new();
                    format_line(&mut out, LogFormat::Text, now, "request", &fields);
                    assert_eq!(String::from_utf8(out).unwrap(), by_fmt(now, &fields));
                    let mut out = Vec::new();
                    format_line(&mut out, LogFormat::Json, now, "request", &fields);
                    let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
                    assert_eq!(line["raw"], text);
                    assert_eq!(line["quoted"], text);
                    assert_eq!(line["number"], number);
                }
            }
        }
    }
}
