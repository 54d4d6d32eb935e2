//! The history as a picture: one HTML file with inline SVG, no scripts, no network. Each
//! key gets a band with one lane per client; an operation is a bar from its invocation to
//! its completion (colour = kind, hatched = unknown outcome, grey = refused); faults are
//! shaded across the whole height; the failing window, if any, is outlined in red and
//! drawn again, larger and labelled, at the top.

use std::fmt::Write as _;
use std::path::Path;

use super::history::{Op, Req, Res, Window};

/// A fault as it happened.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FaultSpan {
    pub start_us: u64,
    pub end_us: u64,
    pub desc: String,
    pub ok: bool,
}

pub struct Timeline<'a> {
    pub title: String,
    pub summary: Vec<String>,
    pub keys: &'a [String],
    pub ops: &'a [Op],
    pub faults: &'a [FaultSpan],
    pub window: Option<&'a Window>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn colour(op: &Op) -> &'static str {
    match (&op.req, &op.res) {
        (_, Res::Refused { .. }) => "#c8c8c8",
        (Req::Put { .. }, _) => "#3b7dd8",
        (Req::Get, _) => "#3aa655",
        (Req::Cas { .. }, Res::Cas { succeeded: false, .. }) => "#f2c38b",
        (Req::Cas { .. }, _) => "#e8871e",
    }
}

const LANE_PX: f64 = 11.0;
const LEFT_PX: f64 = 70.0;
const TOP_PX: f64 = 24.0;

/// Draws `ops` (indices into `all`) between `from_us` and `to_us` at `px_per_ms`.
fn svg(
    t: &Timeline,
    ops: &[usize],
    from_us: u64,
    to_us: u64,
    px_per_ms: f64,
    labels: bool,
) -> String {
    let span_ms = (to_us.saturating_sub(from_us)) as f64 / 1000.0;
    let width = LEFT_PX + span_ms * px_per_ms + 40.0;
    let x = |us: u64| LEFT_PX + (us.saturating_sub(from_us)) as f64 / 1000.0 * px_per_ms;
    // Lanes: per key, the clients that touched it.
    let mut keys: Vec<u8> = ops.iter().map(|i| t.ops[*i].key).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut lanes: Vec<(u8, u32)> = Vec::new();
    for k in &keys {
        let mut cs: Vec<u32> =
            ops.iter().map(|i| &t.ops[*i]).filter(|o| o.key == *k).map(|o| o.client).collect();
        cs.sort_unstable();
        cs.dedup();
        lanes.extend(cs.into_iter().map(|c| (*k, c)));
    }
    // With labels, each lane has two label rows under its bars, used alternately, so the
    // labels of short neighbouring operations do not print over each other.
    let lane_px = if labels { 3.2 * LANE_PX } else { LANE_PX };
    let height = TOP_PX + lanes.len() as f64 * lane_px + keys.len() as f64 * 6.0 + 20.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="monospace" font-size="10">"#
    );
    s.push_str(r##"<defs><pattern id="hatch" width="4" height="4" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="2" height="4" fill="#ffffff" opacity="0.6"/></pattern></defs>"##);
    // Time axis: about ten ticks, at 1-2-5 steps.
    let step_us: u64 = [1u64, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000]
        .iter()
        .map(|ms| ms * 1000)
        .find(|step| (to_us.saturating_sub(from_us)) / step <= 12)
        .unwrap_or(60_000_000);
    let digits = if step_us < 10_000 {
        3
    } else if step_us < 100_000 {
        2
    } else {
        1
    };
    let mut tick = from_us.div_ceil(step_us) * step_us;
    while tick <= to_us {
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP_PX}" x2="{x:.1}" y2="{height:.0}" stroke="#eeeeee"/><text x="{x:.1}" y="12" fill="#666">{:.digits$}s</text>"##,
            tick as f64 / 1e6,
            x = x(tick)
        );
        tick += step_us;
    }
    for f in t.faults.iter().filter(|f| f.end_us >= from_us && f.start_us <= to_us) {
        let (x0, x1) = (x(f.start_us.max(from_us)), x(f.end_us.min(to_us).max(f.start_us)));
        let w = (x1 - x0).max(2.0);
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="14" width="{w:.1}" height="{h:.0}" fill="{c}" opacity="0.18"><title>{d}</title></rect><text x="{x0:.1}" y="22" fill="#a33">{d}</text>"##,
            h = height - 14.0,
            c = if f.ok { "#d9534f" } else { "#999999" },
            d = esc(&f.desc)
        );
    }
    if let Some(w) = t.window {
        let (x0, x1) = (x(w.from_us.max(from_us)), x(w.to_us.min(to_us)));
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="{TOP_PX}" width="{:.1}" height="{:.0}" fill="none" stroke="#d00" stroke-width="2" stroke-dasharray="6 3"/>"##,
            (x1 - x0).max(2.0),
            height - TOP_PX
        );
    }
    let mut y = TOP_PX;
    let mut prev_key = None;
    let lane_y: Vec<((u8, u32), f64)> = lanes
        .iter()
        .map(|lane| {
            if prev_key != Some(lane.0) {
                if prev_key.is_some() {
                    y += 6.0;
                }
                prev_key = Some(lane.0);
            }
            let here = y;
            y += lane_px;
            (*lane, here)
        })
        .collect();
    for ((k, c), ly) in &lane_y {
        let name = t.keys.get(*k as usize).map_or("?".to_string(), |n| n.clone());
        let who = if *c == u32::MAX { "final".to_string() } else { format!("c{c}") };
        let _ = write!(
            s,
            r##"<text x="2" y="{:.1}" fill="#333">{} {}</text>"##,
            ly + LANE_PX - 2.0,
            esc(&name),
            who
        );
    }
    let in_window = |i: usize| t.window.is_some_and(|w| w.ops.binary_search(&i).is_ok());
    let mut per_lane: std::collections::HashMap<(u8, u32), usize> = Default::default();
    for &i in ops {
        let o = &t.ops[i];
        let Some((_, ly)) = lane_y.iter().find(|(l, _)| *l == (o.key, o.client)) else {
            continue;
        };
        let x0 = x(o.call_us.max(from_us));
        let x1 = x(o.ret_us.min(to_us).max(o.call_us));
        let w = (x1 - x0).max(1.5);
        let stroke = if in_window(i) {
            r##" stroke="#d00" stroke-width="1.5""##
        } else if o.is_unknown() {
            r##" stroke="#555" stroke-dasharray="2 2""##
        } else {
            ""
        };
        let tip = format!(
            "c{} {}: {} [{:.3}s – {:.3}s]{}",
            o.client,
            t.keys.get(o.key as usize).map_or("?", |k| k.as_str()),
            o.describe(),
            o.call_us as f64 / 1e6,
            o.ret_us as f64 / 1e6,
            o.node.map_or(String::new(), |n| format!(" node {n}"))
        );
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{:.0}" fill="{}"{stroke}><title>{}</title></rect>"#,
            ly + 1.0,
            LANE_PX - 2.0,
            colour(o),
            esc(&tip)
        );
        if o.is_unknown() {
            let _ = write!(
                s,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{:.0}" fill="url(#hatch)"/>"#,
                ly + 1.0,
                LANE_PX - 2.0
            );
        }
        if labels {
            let nth = per_lane.entry((o.key, o.client)).or_insert(0);
            let row = (*nth % 2) as f64;
            *nth += 1;
            let _ = write!(
                s,
                r##"<text x="{x0:.1}" y="{:.1}" fill="#222">{}</text>"##,
                ly + LANE_PX + 9.0 + row * 11.0,
                esc(&o.describe())
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Writes the page.
pub fn write(path: &Path, t: &Timeline) -> std::io::Result<()> {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:sans-serif;margin:16px}} .scroll{{overflow-x:auto;border:1px solid #ddd}}\
         pre{{background:#f6f6f6;padding:8px}} .legend span{{display:inline-block;width:14px;height:10px;margin:0 4px 0 12px}}</style>\
         </head><body><h2>{}</h2><pre>{}</pre>",
        esc(&t.title),
        esc(&t.title),
        esc(&t.summary.join("\n"))
    );
    html.push_str(
        "<p class=\"legend\">bars run from invocation to completion:\
         <span style=\"background:#3b7dd8\"></span>put<span style=\"background:#3aa655\"></span>get\
         <span style=\"background:#e8871e\"></span>cas ok<span style=\"background:#f2c38b\"></span>cas failed\
         <span style=\"background:#c8c8c8\"></span>refused (not applied); dashed and hatched: unknown outcome \
         (drawn until the client gave up; it may take effect any time after its start); red shading: faults; \
         red dashed box and outlines: the failing window. Hover for details.</p>",
    );
    if let Some(w) = t.window {
        let from = w.from_us.saturating_sub(20_000);
        let to = w.to_us + 20_000;
        let span_ms = ((to - from) as f64 / 1000.0).max(1.0);
        let px_per_ms = (1400.0 / span_ms).clamp(0.05, 20.0);
        let _ = write!(
            html,
            "<h3>Smallest failing window: key {} from {:.3}s to {:.3}s, {} operations</h3>\
             <p>No order of these operations explains their results, whatever the key held \
             before the window ({} possible states tried).</p><div class=\"scroll\">{}</div><pre>",
            esc(t.keys.get(w.key as usize).map_or("?", |k| k.as_str())),
            w.from_us as f64 / 1e6,
            w.to_us as f64 / 1e6,
            w.ops.len(),
            w.states_tried,
            svg(t, &w.ops, from, to, px_per_ms, true)
        );
        for &i in &w.ops {
            let o = &t.ops[i];
            let _ = writeln!(
                html,
                "{:>9.3}s – {:>9.3}s  c{:<3} {}{}",
                o.call_us as f64 / 1e6,
                o.ret_us as f64 / 1e6,
                o.client,
                esc(&o.describe()),
                o.node.map_or(String::new(), |n| format!("  (node {n})"))
            );
        }
        html.push_str("</pre>");
    }
    let end = t.ops.iter().map(|o| o.ret_us).max().unwrap_or(0).max(1);
    let span_ms = end as f64 / 1000.0;
    let px_per_ms = (30_000.0 / span_ms).clamp(0.02, 0.5);
    let all: Vec<usize> = (0..t.ops.len()).collect();
    let _ = write!(
        html,
        "<h3>Whole history: {} operations</h3><div class=\"scroll\">{}</div>",
        t.ops.len(),
        svg(t, &all, 0, end, px_per_ms, false)
    );
    html.push_str("<h3>Faults</h3><pre>");
    for f in t.faults {
        let _ = writeln!(
            html,
            "{:>9.3}s – {:>9.3}s  {}{}",
            f.start_us as f64 / 1e6,
            f.end_us as f64 / 1e6,
            esc(&f.desc),
            if f.ok { "" } else { "  (not applied)" }
        );
    }
    html.push_str("</pre></body></html>\n");
    std::fs::write(path, html)
}
