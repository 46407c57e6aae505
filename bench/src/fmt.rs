//! How figures are printed in the report's tables.

use super::args::Scenario;
use super::proto::Target;

pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 10.0 => format!("{r:.0}×"),
        Some(r) => format!("{r:.2}×"),
        None => "–".into(),
    }
}

pub fn fmt_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

pub fn fmt_rate(v: Option<f64>) -> String {
    v.map(fmt_count).unwrap_or_else(|| "–".into())
}

pub fn fmt_rate_or(v: Option<f64>, sc: Scenario, t: Target) -> String {
    if v.is_none() && sc == Scenario::Topics && !t.has_wildcards() {
        "n/a (no wildcards)".into()
    } else {
        fmt_rate(v)
    }
}

pub fn fmt_us(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())
}

pub fn fmt_kib(v: Option<f64>) -> String {
    v.map(|b| format!("{:.2} KiB", b / 1024.0))
        .unwrap_or_else(|| "–".into())
}

pub fn goal_cell(met: Option<bool>, goal: &str) -> String {
    match met {
        Some(true) => format!("{goal}: met"),
        Some(false) => format!("{goal}: **not met**"),
        None => format!("{goal}: not measured"),
    }
}
