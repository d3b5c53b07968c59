//! The status page at `/`: one server-rendered HTML table of channels (release, rollout,
//! paused, node and outcome counts). Every value is HTML-escaped; no scripts, no external
//! resources (`Content-Security-Policy: default-src 'none'`).
use std::fmt::Write;

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::Value;

use crate::api::ApiError;
use crate::app::App;
use crate::body::ResponseBody;
use crate::channels;
use crate::status::{self, ChannelStatus};

/// Renders the page.
pub async fn render(app: &App) -> Result<String, ApiError> {
    let repo = app.repo.path().to_owned();
    let names = tokio::task::spawn_blocking(move || channels::list(&repo))
        .await
        .map_err(|e| ApiError::internal("page worker failed", &e))?
        .map_err(|e| ApiError::internal("cannot list channels", &e))?;
    let mut rows = String::new();
    for name in names {
        match status::build(app, &name).await {
            Ok(Some(s)) => row(&mut rows, &s),
            Ok(None) => {}
            Err(e) => error_row(&mut rows, &name, &e.message),
        }
    }
    Ok(document(&rows))
}

/// The HTML response.
pub fn response(html: String) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::bytes(html));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    resp
}

fn document(rows: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Tandem repository</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.paused{{color:#b00;font-weight:bold}}</style>\n\
         </head><body><h1>Tandem repository</h1>\n<table>\n<tr><th>channel</th><th>release</th>\
         <th>metadata version</th><th>rollout</th><th>state</th><th>nodes</th>\
         <th>outcomes of the release</th><th>latest failure</th></tr>\n{rows}</table>\n\
         <p>Channel data is shown as published, unverified; nodes verify signatures themselves.</p>\n\
         </body></html>\n"
    )
}

fn row(out: &mut String, s: &ChannelStatus) {
    let release = format!(
        "{} {}",
        text(s.release.get("product")),
        text(s.release.get("version"))
    );
    let rollout = match s.rollout.get("percent") {
        Some(p) => format!("{} %", text(Some(p))),
        None => "–".to_owned(),
    };
    let state = if s.paused {
        "<span class=\"paused\">paused</span>".to_owned()
    } else {
        "active".to_owned()
    };
    let outcomes = s
        .current_release
        .outcomes
        .iter()
        .map(|(k, v)| format!("{}: {v}", escape(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let failure = s
        .current_release
        .failures
        .first()
        .map_or(String::new(), |f| {
            format!(
                "{} {}: {}",
                escape(&f.node_id),
                f.outcome,
                escape(f.reason.as_deref().unwrap_or(""))
            )
        });
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&s.channel),
        escape(release.trim()),
        s.metadata_version.map_or("–".into(), |v| v.to_string()),
        escape(&rollout),
        state,
        s.nodes.total,
        outcomes,
        failure
    );
}

fn error_row(out: &mut String, name: &str, message: &str) {
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td colspan=\"7\">{}</td></tr>",
        escape(name),
        escape(message)
    );
}

/// A JSON value as display text (strings without quotes).
fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<script>alert('x')&\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;"
        );
    }
}
