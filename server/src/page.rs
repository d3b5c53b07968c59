//! The fleet dashboard at `/`: an HTML page whose channel table is rendered here (so it
//! reads without scripts), then kept current by `/dashboard.js`, which reads the same JSON
//! the API serves (`GET /v1/channels`, `GET /v1/nodes`) every 10 s, draws the charts as
//! inline SVG and calls the pause/resume API with the admin token kept in session storage.
//!
//! Every value rendered here is HTML-escaped; the script writes text with `textContent` only.
//! Nothing is inline or external: the page's `Content-Security-Policy` allows scripts,
//! styles and requests from this origin alone (no inline script or style, no `eval`), and
//! the script and style sheet are compiled into the binary.
use std::fmt::Write;

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::api::ApiError;
use crate::app::App;
use crate::body::ResponseBody;
use crate::db::TransferTotals;
use crate::route::{Asset, ICON_PATH, SCRIPT_PATH, STYLE_PATH};
use crate::status::{self, ChannelStatus};

/// The page's policy: same-origin scripts, styles and requests; nothing inline, no `eval`,
/// no framing, no form posts.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Renders the page.
pub async fn render(app: &App) -> Result<String, ApiError> {
    let fleet = status::fleet(app).await?;
    let mut rows = String::new();
    for s in &fleet.channels {
        row(&mut rows, s);
    }
    for e in &fleet.errors {
        error_row(&mut rows, &e.channel, &e.error);
    }
    Ok(document(&rows))
}

/// The HTML response.
pub fn response(html: String) -> Response<ResponseBody> {
    asset_response(html.into_bytes(), "text/html; charset=utf-8")
}

/// The dashboard's script, style sheet or icon, compiled in.
pub fn asset(asset: Asset) -> Response<ResponseBody> {
    let (content_type, content) = match asset {
        Asset::Script => (
            "text/javascript; charset=utf-8",
            include_str!("dashboard/dashboard.js"),
        ),
        Asset::Style => (
            "text/css; charset=utf-8",
            include_str!("dashboard/dashboard.css"),
        ),
        Asset::Icon => ("image/svg+xml", include_str!("dashboard/icon.svg")),
    };
    asset_response(content.as_bytes().to_vec(), content_type)
}

fn asset_response(body: Vec<u8>, content_type: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::bytes(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

fn document(rows: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Tandem fleet</title>\n<link rel=\"stylesheet\" href=\"{STYLE_PATH}\">\
         <link rel=\"icon\" href=\"{ICON_PATH}\" type=\"image/svg+xml\">\
         <script src=\"{SCRIPT_PATH}\" defer></script>\n</head><body>\n\
         <header><h1>Tandem fleet</h1><p id=\"updated\" aria-live=\"polite\"></p>\
         <form id=\"admin-form\"><label>Admin token \
         <input type=\"password\" id=\"admin-token\" autocomplete=\"off\"></label>\
         <button type=\"submit\" id=\"admin-keep\">Keep for this session</button>\
         <button type=\"button\" id=\"admin-forget\">Forget</button>\
         <span id=\"admin-state\"></span></form></header>\n<main>\n\
         <section><h2>Channels</h2><div class=\"scroll\"><table id=\"channel-table\" class=\"cards\">\n\
         <thead><tr><th>channel</th><th>release</th><th>metadata version</th><th>rollout</th>\
         <th>state</th><th>nodes</th><th>nodes by latest outcome</th>\
         <th>transfer of the release</th><th>latest failure</th>\
         </tr></thead>\n<tbody>\n{rows}</tbody></table></div></section>\n\
         <section><h2>Nodes per version</h2><div id=\"version-charts\" class=\"panels\"></div></section>\n\
         <section><h2>Reports about the current release per hour, last 24 h</h2>\
         <div id=\"outcome-charts\" class=\"panels\"></div></section>\n\
         <section><h2>Latest failures</h2><div class=\"scroll\"><table id=\"failure-table\" class=\"cards\">\
         <thead><tr><th>when</th><th>channel</th><th>node</th><th>outcome</th><th>from</th>\
         <th>reason</th></tr></thead><tbody></tbody></table></div></section>\n\
         <section><h2>Reboot leases</h2><p id=\"lease-summary\"></p>\
         <div class=\"scroll\"><table id=\"lease-table\" class=\"cards\">\
         <thead><tr><th>group</th><th>node</th><th>held for</th><th>expiry</th><th>slots</th>\
         <th>action</th></tr></thead><tbody></tbody></table></div>\
         <h3>Waiting for a lease</h3><div class=\"scroll\"><table id=\"lease-waiting\">\
         <thead><tr><th>group</th><th>node</th><th>waiting for</th><th>last asked</th></tr></thead>\
         <tbody></tbody></table></div>\
         <h3>Lease log</h3><div class=\"scroll\"><table id=\"lease-log\">\
         <thead><tr><th>when</th><th>group</th><th>node</th><th>event</th></tr></thead>\
         <tbody></tbody></table></div></section>\n\
         <section><h2>Node keys</h2><p id=\"key-summary\"></p>\
         <h3>Waiting for approval</h3><div class=\"scroll\"><table id=\"enrollment-table\" class=\"cards\">\
         <thead><tr><th>node</th><th>key</th><th>asked</th><th>action</th></tr></thead>\
         <tbody></tbody></table></div>\
         <h3>Enrolled</h3><div class=\"scroll\"><table id=\"key-table\" class=\"cards\">\
         <thead><tr><th>node</th><th>key</th><th>approved</th><th>by</th><th>action</th></tr></thead>\
         <tbody></tbody></table></div></section>\n\
         <section><h2>Audit log</h2><div class=\"scroll\"><table id=\"audit-table\" class=\"cards\">\
         <thead><tr><th>when</th><th>who</th><th>role</th><th>action</th><th>on</th><th>why</th>\
         </tr></thead><tbody></tbody></table></div></section>\n\
         <section><h2>Nodes</h2><form id=\"node-search\" role=\"search\">\
         <input type=\"search\" id=\"node-query\" placeholder=\"node id contains…\" \
         maxlength=\"128\" aria-label=\"search node id\"></form>\
         <p id=\"node-count\"></p><div class=\"scroll\"><table id=\"node-table\">\
         <thead><tr><th>node</th><th>channel</th><th>version</th><th>last outcome</th>\
         <th>of release</th><th>last seen</th><th>last install</th><th>reason</th></tr></thead>\
         <tbody></tbody>\
         </table></div></section>\n</main>\n\
         <p class=\"note\">Channel data is shown as published, unverified; nodes verify signatures themselves.</p>\n\
         </body></html>\n"
    )
}

fn row(out: &mut String, s: &ChannelStatus) {
    let release = format!("{} {}", s.release.product, s.release.version);
    let rollout = format!("{} %", s.rollout.percent);
    let reason = s.pause.as_ref().and_then(|p| p.reason.as_deref());
    let state = match (s.paused, reason) {
        (true, Some(reason)) => format!(
            "<span class=\"paused\">paused</span><span class=\"pause-reason\">{}</span>",
            escape(reason)
        ),
        (true, None) => "<span class=\"paused\">paused</span>".to_owned(),
        (false, _) => "active".to_owned(),
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
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"state\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"failure\"><div class=\"clip\">{}</div></td></tr>",
        escape(&s.channel),
        escape(release.trim()),
        s.metadata_version,
        escape(&rollout),
        state,
        s.nodes.total,
        outcomes,
        transfer_text(&s.current_release.transfer),
        failure
    );
}

fn error_row(out: &mut String, name: &str, message: &str) {
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td colspan=\"8\">{}</td></tr>",
        escape(name),
        escape(message)
    );
}

/// A release's transfer sums for people, e.g. `fetched 12.3 MB, reused 240 MB over 17 installs
/// (95 % reused)`; without any, says so rather than showing zeros. `transferText` in
/// dashboard.js writes the same.
fn transfer_text(t: &TransferTotals) -> String {
    if t.transfer_reports == 0 {
        return "no transfer figures yet".to_owned();
    }
    let installs = if t.transfer_reports == 1 {
        "install"
    } else {
        "installs"
    };
    let mut text = format!(
        "fetched {}, reused {} over {} {installs}",
        size_text(t.bytes_fetched),
        size_text(t.bytes_reused),
        t.transfer_reports
    );
    let moved = u128::from(t.bytes_fetched) + u128::from(t.bytes_reused);
    if let Some(percent) = (u128::from(t.bytes_reused) * 100).checked_div(moved) {
        let _ = write!(text, " ({percent} % reused)");
    }
    text
}

/// A byte count for people: decimal units, one decimal below 100 (`512 B`, `12.3 MB`,
/// `240 MB`). `sizeText` in dashboard.js writes the same.
fn size_text(bytes: u64) -> String {
    let bytes = u128::from(bytes);
    let rounded = |unit: u128| (bytes + unit / 2) / unit;
    let (mut unit, mut name) = (1, "B");
    for next in ["kB", "MB", "GB", "TB", "PB"] {
        if rounded(unit) < 1000 {
            break;
        }
        unit *= 1000;
        name = next;
    }
    let tenths = (bytes * 10 + unit / 2) / unit;
    if unit > 1 && tenths < 1000 {
        format!("{}.{} {name}", tenths / 10, tenths % 10)
    } else {
        format!("{} {name}", rounded(unit))
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
    use crate::db::TransferTotals;

    #[test]
    fn sizes_read_in_decimal_units() {
        for (bytes, shown) in [
            (0, "0 B"),
            (999, "999 B"),
            (1_000, "1.0 kB"),
            (12_345_678, "12.3 MB"),
            (99_949_999, "99.9 MB"),
            (99_950_000, "100 MB"),
            (240_000_016, "240 MB"),
            (999_499_999, "999 MB"),
            (999_500_000, "1.0 GB"),
            (u64::MAX, "18447 PB"),
        ] {
            assert_eq!(super::size_text(bytes), shown, "{bytes}");
        }
    }

    #[test]
    fn transfer_sums_read_as_a_sentence_or_say_there_are_none() {
        let text = |bytes_fetched, bytes_reused, transfer_reports| {
            super::transfer_text(&TransferTotals {
                bytes_fetched,
                bytes_reused,
                transfer_reports,
            })
        };
        assert_eq!(text(0, 0, 0), "no transfer figures yet");
        assert_eq!(
            text(12_300_010, 240_000_016, 17),
            "fetched 12.3 MB, reused 240 MB over 17 installs (95 % reused)"
        );
        assert_eq!(
            text(0, 0, 1),
            "fetched 0 B, reused 0 B over 1 install",
            "no share of nothing"
        );
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<script>alert('x')&\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;"
        );
    }
}
