//! The throughput chart, drawn on the server as SVG: jobs processed per
//! minute above, failed attempts per minute below, each panel on its own
//! scale (a few failures next to a peak of thousands would otherwise be
//! invisible), with value and time axes printed, not only in tooltips.
use maud::{Markup, html};

/// Room for the value labels on the left.
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
/// Between the panels: the time labels.
const GAP: f64 = 22.0;
const BOTTOM: f64 = 16.0;

/// How big a chart is drawn: the sum of all queues large, each queue
/// beside the others.
#[derive(Clone, Copy)]
pub(crate) enum Size {
    Large,
    Small,
}

impl Size {
    fn width(self) -> f64 {
        match self {
            Size::Large => 760.0,
            Size::Small => 420.0,
        }
    }

    /// Heights of the processed and failed panels.
    fn panels(self) -> (f64, f64) {
        match self {
            Size::Large => (130.0, 60.0),
            Size::Small => (80.0, 40.0),
        }
    }

    fn time_labels(self) -> usize {
        match self {
            Size::Large => 6,
            Size::Small => 4,
        }
    }
}

/// One series of points, oldest first, `minutes` apart, the first at
/// `first_minute` (minutes since the epoch). Each value is a rate per
/// minute (a mean when a point covers several minutes).
pub(crate) struct Series<'a> {
    pub done: &'a [f64],
    pub failed: &'a [f64],
    pub first_minute: i64,
    pub minutes: i64,
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `peak`: a top that reads well.
fn nice_top(peak: f64) -> f64 {
    if peak <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(peak.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&top| top >= peak)
        .unwrap_or(10.0 * magnitude)
}

/// A count as an axis shows it: 1.5k, 20k, 3M.
fn short(n: f64) -> String {
    let (value, unit) = if n >= 1e6 {
        (n / 1e6, "M")
    } else if n >= 1e3 {
        (n / 1e3, "k")
    } else {
        (n, "")
    };
    if value.fract() == 0.0 || value >= 100.0 {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}

fn clock(minute: i64) -> String {
    chrono::DateTime::from_timestamp(minute * 60, 0)
        .map(|t| t.format("%H:%M").to_string())
        .unwrap_or_default()
}

pub(crate) fn draw(id: &str, label: &str, size: Size, s: &Series) -> Markup {
    let (width, (done_h, failed_h)) = (size.width(), size.panels());
    let points = s.done.len().max(1);
    let plot_w = width - LEFT - RIGHT;
    let step = plot_w / points as f64;
    let bar = (step - 1.0).max(1.0);
    let done_top = nice_top(s.done.iter().copied().fold(0.0, f64::max));
    let failed_top = nice_top(s.failed.iter().copied().fold(0.0, f64::max));
    let done_base = TOP + done_h;
    let failed_base = done_base + GAP + failed_h;
    let height = failed_base + BOTTOM;
    let total = |v: &[f64]| (v.iter().sum::<f64>() * s.minutes as f64).round() as u64;
    let every = (points / size.time_labels()).max(1);
    html! {
        figure.chart class=(match size { Size::Large => "large", Size::Small => "small" }) id=(id) {
            svg.chart width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) }
                role="img"
                aria-label={ (label) ": " (total(s.done)) " processed and " (total(s.failed)) " failed attempts" } {
                // Value axes: zero, half and top of each panel.
                @for (base, h, top) in [(done_base, done_h, done_top), (failed_base, failed_h, failed_top)] {
                    @for frac in [0.0, 0.5, 1.0] {
                        @let y = base - h * frac;
                        line.grid x1=(LEFT) y1=(y) x2=(width - RIGHT) y2=(y) {}
                        text.value x=(LEFT - 4.0) y=(y + 4.0) text-anchor="end" { (short(top * frac)) }
                    }
                }
                @for (i, &n) in s.done.iter().enumerate() {
                    @if n > 0.0 {
                        @let h = (n / done_top * done_h).max(1.0);
                        rect.done x=(LEFT + i as f64 * step) y=(done_base - h) width=(bar) height=(h) {
                            title { (clock(s.first_minute + i as i64 * s.minutes)) ": " (short(n)) " processed per minute" }
                        }
                    }
                }
                @for (i, &n) in s.failed.iter().enumerate() {
                    @if n > 0.0 {
                        @let h = (n / failed_top * failed_h).max(1.0);
                        rect.failed x=(LEFT + i as f64 * step) y=(failed_base - h) width=(bar) height=(h) {
                            title { (clock(s.first_minute + i as i64 * s.minutes)) ": " (short(n)) " failed attempts per minute" }
                        }
                    }
                }
                // Time axis, between the panels.
                @for i in (0..points).step_by(every) {
                    text.time x=(LEFT + i as f64 * step) y=(done_base + 15.0) { (clock(s.first_minute + i as i64 * s.minutes)) }
                }
                text.panel x=(LEFT + 4.0) y=(TOP + 12.0) { "processed / min" }
                text.panel x=(LEFT + 4.0) y=(failed_base - failed_h + 12.0) { "failed attempts / min" }
            }
            figcaption {
                b { (label) } ": "
                span data-figure="processed" { (total(s.done)) } " processed, "
                span data-figure="failed" { (total(s.failed)) } " failed attempts "
                "(a job that fails three times counts three), peak "
                (short(s.done.iter().copied().fold(0.0, f64::max))) "/min. UTC."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tops_are_round_numbers_at_or_above_the_peak() {
        assert_eq!(nice_top(0.0), 1.0);
        assert_eq!(nice_top(3.0), 5.0);
        assert_eq!(nice_top(96.0), 100.0);
        assert_eq!(nice_top(2_000.0), 2_000.0);
        assert_eq!(nice_top(2_001.0), 5_000.0);
    }

    #[test]
    fn failures_get_their_own_scale() {
        let done = [2_000.0; 60];
        let mut failed = [0.0; 60];
        failed[10] = 96.0;
        let svg = draw(
            "c",
            "all",
            Size::Large,
            &Series {
                done: &done,
                failed: &failed,
                first_minute: 0,
                minutes: 1,
            },
        )
        .into_string();
        // The failure bar fills most of its panel, not 96/2000 of it.
        let bar = svg.split("class=\"failed\"").nth(1).expect("a failure bar");
        let height: f64 = bar
            .split("height=\"")
            .nth(1)
            .and_then(|h| h.split('"').next())
            .and_then(|h| h.parse().ok())
            .expect("its height");
        assert!(height > Size::Large.panels().1 * 0.9, "{height}");
        assert!(svg.contains(">100<"), "the failed panel's top label");
        assert!(svg.contains(">2k<"), "the processed panel's top label");
        assert!(svg.contains(">00:00<"), "a time label");
    }
}
