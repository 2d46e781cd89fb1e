//! Plain HTML pages rendered on the server: `/` (the profile list) and `/p/{id}` (a
//! profile's summary, tier split and top functions, with links to the API). They need
//! no JavaScript; every name is escaped. The interactive viewer (web/) is served in
//! their place once it is built into the binary.

use std::fmt::Write as _;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::{authorize, base_url, iso8601, load, Access, State};
use crate::error::ApiError;
use crate::store::{ListQuery, TierTotals};

/// Text as HTML (element content and quoted attribute values).
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;background:#fff}\
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}\
td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:13px}\
.bar{display:flex;height:12px;width:240px;border:1px solid #999}\
@media (prefers-color-scheme:dark){body{background:#161616;color:#ddd}td,th{border-color:#333}a{color:#8ab4f8}}";

/// A tier's colour, from the one palette (web/palette.json) the viewer and exports use.
fn tier_colour(t: &str) -> &'static str {
    prof_analysis::Tier::from_name(t)
        .map(prof_analysis::palette::tier_colour)
        .unwrap_or("#999999")
}

fn tier_bar(o: &mut String, tiers: &Option<TierTotals>) {
    let Some(t) = tiers else {
        o.push_str("<span>not analyzed yet</span>");
        return;
    };
    let total: u64 = t.values().sum();
    if total == 0 {
        o.push_str("<span>no samples</span>");
        return;
    }
    o.push_str("<div class=bar>");
    for name in crate::api::tier_names() {
        let w = t.get(name).copied().unwrap_or(0);
        if w > 0 {
            let pct = w as f64 * 100.0 / total as f64;
            let _ = write!(
                o,
                "<div title=\"{name} {pct:.1}%\" style=\"width:{pct:.3}%;background:{}\"></div>",
                tier_colour(name)
            );
        }
    }
    o.push_str("</div>");
}

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'",
        ))
        .body(format!(
            "<!doctype html><html><head><meta charset=utf-8><title>{}</title>\
             <style>{STYLE}</style></head><body>{body}</body></html>",
            escape(title)
        ))
}

pub async fn index(req: HttpRequest, st: State) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
    let st2 = st.clone();
    let list = web::block(move || {
        st2.storage.meta.list_profiles(&ListQuery {
            limit: 100,
            ..ListQuery::default()
        })
    })
    .await??;
    let mut o = String::new();
    let _ = write!(
        o,
        "<h1>prof</h1><p>{} profile{} stored. Upload with <code>prof run --web=URL -- CMD</code> \
         or <code>prof upload PATH --server URL</code>.</p>",
        list.total,
        if list.total == 1 { "" } else { "s" }
    );
    o.push_str(
        "<table><tr><th>name</th><th>command</th><th>date</th><th>duration</th>\
         <th>samples</th><th>tiers</th></tr>",
    );
    for r in &list.items {
        let _ = write!(
            o,
            "<tr><td><a href=\"/p/{}\">{}</a></td><td><code>{}</code></td><td>{}</td>\
             <td class=n>{:.2} s</td><td class=n>{}</td><td>",
            escape(&r.id),
            escape(&r.name),
            escape(&r.command),
            iso8601(r.created_unix_ms),
            r.duration_s,
            r.samples
        );
        tier_bar(&mut o, &r.tiers);
        o.push_str("</td></tr>");
    }
    o.push_str("</table>");
    Ok(page("prof: profiles", &o))
}

pub async fn profile(
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
    let (rec, p) = load(&st, &path).await?;
    let s = &p.summary;
    let base = base_url(&req, &st);
    let id = escape(&rec.id);
    let mut o = String::new();
    let _ = write!(
        o,
        "<p><a href=\"/\">all profiles</a></p><h1>{}</h1><p><code>{}</code></p>\
         <p>{} · {:.2} s · {} process{} · {} thread{} · {} samples (weight {}), {} lost · {} mode</p>",
        escape(&rec.name),
        escape(&rec.command),
        iso8601(rec.created_unix_ms),
        s.duration_s,
        s.processes.len(),
        if s.processes.len() == 1 { "" } else { "es" },
        s.threads.len(),
        if s.threads.len() == 1 { "" } else { "s" },
        s.samples,
        s.weight,
        s.lost_samples,
        escape(&s.mode),
    );
    o.push_str("<h2>Tiers</h2><table>");
    let total: u64 = p.tiers.values().sum();
    for name in crate::api::tier_names() {
        let w = p.tiers.get(name).copied().unwrap_or(0);
        let pct = if total > 0 {
            w as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let _ = write!(
            o,
            "<tr><td><span style=\"color:{}\">■</span> {name}</td><td class=n>{w}</td><td class=n>{pct:.1}%</td></tr>",
            tier_colour(name)
        );
    }
    o.push_str("</table><h2>Top functions</h2><table><tr><th>self</th><th>total</th><th>function</th><th>module</th><th>location</th></tr>");
    for f in s.functions.iter().take(50) {
        let loc = match (&f.file, f.line) {
            (Some(file), Some(l)) => format!("{file}:{l}"),
            (Some(file), None) => file.clone(),
            _ => String::new(),
        };
        let _ = write!(
            o,
            "<tr><td class=n>{}</td><td class=n>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            f.self_,
            f.total,
            escape(&f.name),
            escape(&f.module),
            escape(&loc)
        );
    }
    o.push_str("</table>");
    for w in s.notices.iter().chain(&s.symbol_warnings) {
        let _ = write!(o, "<p>note: {}</p>", escape(w));
    }
    let api = format!("{}/api/v1/profiles/{id}", escape(&base));
    let _ = write!(
        o,
        "<h2>Data</h2><ul><li><a href=\"{api}\">summary (JSON)</a></li>\
         <li><a href=\"{api}/tree\">call tree (JSON)</a></li>\
         <li><a href=\"{api}/timeline\">timeline (JSON)</a></li>\
         <li><a href=\"{api}/functions\">functions (JSON)</a></li>\
         <li><a href=\"{api}/download\">the profile file</a></li></ul>"
    );
    Ok(page(&format!("prof: {}", rec.name), &o))
}
