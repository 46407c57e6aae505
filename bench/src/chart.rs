//! A small SVG chart of grouped bars, written by hand: three panels of a few bars each do
//! not need a plotting library, and the output stays a readable text file in the repository.

use std::fmt::Write;

/// One panel: groups along x, one bar per series in each group.
pub struct Panel {
    pub title: String,
    pub groups: Vec<Group>,
    /// Formats a value for the label above its bar.
    pub format: fn(f64) -> String,
}

pub struct Group {
    pub label: String,
    /// One value per series; `None` draws "n/a".
    pub values: Vec<Option<f64>>,
}

/// Series names and colours, shared by all panels (the legend).
pub struct Series<'a> {
    pub names: &'a [&'a str],
    pub colors: &'a [&'a str],
}

const PANEL_W: f64 = 330.0;
const PANEL_H: f64 = 300.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 50.0;
const SIDE: f64 = 20.0;

/// Panels side by side with a title and a legend.
pub fn render(title: &str, panels: &[Panel], series: &Series<'_>) -> String {
    let width = PANEL_W * panels.len() as f64;
    let height = PANEL_H + TOP;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{width}" height="{height}" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    let mut lx = SIDE;
    for (name, color) in series.names.iter().zip(series.colors) {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="34" width="12" height="12" fill="{color}"/><text x="{}" y="44">{}</text>"#,
            lx + 16.0,
            escape(name)
        );
        lx += 30.0 + 7.0 * name.len() as f64;
    }
    for (i, p) in panels.iter().enumerate() {
        panel(&mut s, PANEL_W * i as f64, TOP, p, series);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, x0: f64, y0: f64, p: &Panel, series: &Series<'_>) {
    let plot_h = PANEL_H - BOTTOM - 30.0;
    let base = y0 + 30.0 + plot_h;
    let max = p
        .groups
        .iter()
        .flat_map(|g| g.values.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let max = if max > 0.0 { max * 1.15 } else { 1.0 };
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + PANEL_W / 2.0,
        y0 + 12.0,
        escape(&p.title)
    );
    let _ = writeln!(
        s,
        r##"<line x1="{}" y1="{base}" x2="{}" y2="{base}" stroke="#333"/>"##,
        x0 + SIDE,
        x0 + PANEL_W - SIDE
    );
    let groups = p.groups.len().max(1) as f64;
    let group_w = (PANEL_W - 2.0 * SIDE) / groups;
    let bars = series.names.len().max(1) as f64;
    let bar_w = (group_w - 16.0) / bars;
    for (gi, g) in p.groups.iter().enumerate() {
        let gx = x0 + SIDE + group_w * gi as f64 + 8.0;
        for (bi, v) in g.values.iter().enumerate() {
            let bx = gx + bar_w * bi as f64;
            let color = series.colors.get(bi).copied().unwrap_or("#888");
            match v {
                Some(v) => {
                    let h = (v / max * plot_h).max(1.0);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                        base - h,
                        bar_w - 2.0,
                        bx + bar_w / 2.0 - 1.0,
                        base - h - 3.0,
                        escape(&(p.format)(*v))
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#888">n/a</text>"##,
                        bx + bar_w / 2.0 - 1.0,
                        base - 3.0
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + (group_w - 16.0) / 2.0,
            base + 16.0,
            escape(&g.label)
        );
    }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bars_and_missing_values() {
        let svg = render(
            "t <1>",
            &[Panel {
                title: "p".into(),
                groups: vec![Group {
                    label: "g".into(),
                    values: vec![Some(2.0), None],
                }],
                format: |v| format!("{v:.1}"),
            }],
            &Series {
                names: &["a", "b"],
                colors: &["#111", "#222"],
            },
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.contains(">2.0<"));
        assert!(svg.contains(">n/a<"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
