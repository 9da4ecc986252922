//! Line charts as hand-written SVG: axes, grid, ticks, one polyline per
//! series, a legend. Two x axes: linear (latency over time) and
//! HdrHistogram's percentile axis, logarithmic in 1/(1−p) with ticks
//! labelled 0%, 90%, 99%, 99.9%, ...
//!
//! Written by hand because a chart of four polylines does not need a
//! plotting crate (`plotters` would add a font stack and dozens of crates to
//! the harness's build).

use std::fmt::Write as _;

/// One line.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// How x values map to the axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum XAxis {
    /// Linear, from the smallest to the largest x.
    Linear,
    /// x is 1/(1−p): log10 axis from 1 (p = 0) up to a power of ten.
    Percentile,
    /// log10 axis between the powers of ten around the data, ticks
    /// labelled with the values (sizes from 100 to 10,000).
    Log,
}

/// A chart.
pub struct Chart {
    /// Title at the top.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// x mapping.
    pub x_axis: XAxis,
    /// The lines.
    pub series: Vec<Series>,
}

const W: f64 = 960.0;
const H: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 240.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;
/// Ten distinguishable colours (matplotlib's "tab10"): a chart of every
/// peer has eight lines.
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Escapes text for XML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A step of 1, 2 or 5 × 10^k giving about `n` ticks over `range`.
pub fn nice_step(range: f64, n: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / n;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let f = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

fn label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10()).ceil() as usize };
    format!("{v:.decimals$}")
}

/// The percentile a power of ten of 1/(1−p) stands for: 1 → 0%, 10 → 90%.
fn percentile_label(exp: i32) -> String {
    if exp == 0 {
        return "0%".into();
    }
    let p = 100.0 - 100.0 / 10f64.powi(exp);
    let decimals = (exp - 2).max(0) as usize;
    format!("{p:.decimals$}%")
}

impl Chart {
    /// Renders the chart as a standalone SVG document.
    pub fn render(&self) -> String {
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
        for &(x, y) in pts {
            if x.is_finite() && y.is_finite() {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
        }
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        // x mapping and ticks: the axis runs from `lo` to `hi` in axis
        // units (log10 of x on the percentile axis).
        let log = self.x_axis != XAxis::Linear;
        let (lo, hi, xticks): (f64, f64, Vec<(f64, String)>) = if self.x_axis == XAxis::Log {
            let (a, b) = (x0.max(1.0).log10().floor() as i32, x1.max(1.0).log10().ceil() as i32);
            let b = b.max(a + 1);
            let ticks = (a..=b).map(|e| (10f64.powi(e), label(10f64.powi(e), 1.0))).collect();
            (f64::from(a), f64::from(b), ticks)
        } else if log {
            let top = x1.max(100.0).log10().ceil().max(2.0) as i32;
            let ticks = (0..=top).map(|e| (10f64.powi(e), percentile_label(e))).collect();
            (0.0, f64::from(top), ticks)
        } else {
            if x1 <= x0 {
                x1 = x0 + 1.0;
            }
            let step = nice_step(x1 - x0, 8.0);
            let (start, end) = ((x0 / step).floor() * step, (x1 / step).ceil() * step);
            let mut ticks = Vec::new();
            let mut v = start;
            while v <= end + step * 1e-9 {
                ticks.push((v, label(v, step)));
                v += step;
            }
            (start, end, ticks)
        };
        let fx = |x: f64| {
            let v = if log { x.max(1.0).log10() } else { x };
            LEFT + (v - lo) / (hi - lo) * pw
        };
        if y1 <= 0.0 {
            y1 = 1.0;
        }
        let ystep = nice_step(y1, 6.0);
        let ytop = (y1 / ystep).ceil() * ystep;
        let fy = |y: f64| TOP + ph - (y / ytop) * ph;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="13">"#
        );
        let _ = writeln!(s, r#"<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="28" text-anchor="middle" font-size="17" font-weight="bold">{}</text>"#,
            LEFT + pw / 2.0,
            esc(&self.title)
        );
        // grid and ticks
        let _ = writeln!(s, r##"<g stroke="#dddddd" stroke-width="1">"##);
        for (x, _) in &xticks {
            let px = fx(*x);
            let _ =
                writeln!(s, r#"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}"/>"#, TOP + ph);
        }
        let mut yv = 0.0;
        let mut yticks = Vec::new();
        while yv <= ytop + ystep * 1e-9 {
            let py = fy(yv);
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}"/>"#,
                LEFT + pw
            );
            yticks.push((py, label(yv, ystep)));
            yv += ystep;
        }
        let _ = writeln!(s, "</g>");
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(s, r#"<g class="xticks" text-anchor="middle">"#);
        for (x, l) in &xticks {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                fx(*x),
                TOP + ph + 20.0,
                esc(l)
            );
        }
        let _ = writeln!(s, "</g>");
        let _ = writeln!(s, r#"<g class="yticks" text-anchor="end">"#);
        for (py, l) in &yticks {
            let _ =
                writeln!(s, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, LEFT - 8.0, py + 4.0, esc(l));
        }
        let _ = writeln!(s, "</g>");
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 22.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        // series and legend
        for (i, ser) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<String> = ser
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", fx(x), fy(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline class="series" data-name="{}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                esc(&ser.name),
                pts.join(" ")
            );
            // Markers where a series has few points (a curve over sizes),
            // so that a single point still shows.
            if pts.len() <= 20 {
                for p in &pts {
                    let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                    let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{color}"/>"#);
                }
            }
            let ly = TOP + 10.0 + i as f64 * 22.0;
            let lx = W - RIGHT + 15.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                lx + 24.0,
                lx + 30.0,
                ly + 4.0,
                esc(&ser.name)
            );
        }
        let _ = writeln!(s, "</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal XML well-formedness check: tags nest and close, attributes
    /// are quoted, no stray `<` or `&`.
    fn well_formed(doc: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = doc;
        while let Some(lt) = rest.find('<') {
            let text = &rest[..lt];
            if text.contains('>')
                || text
                    .replace("&amp;", "")
                    .replace("&lt;", "")
                    .replace("&gt;", "")
                    .replace("&quot;", "")
                    .contains('&')
            {
                return Err(format!("bad text {text:?}"));
            }
            let gt = rest[lt..].find('>').ok_or("unclosed tag")? + lt;
            let tag = &rest[lt + 1..gt];
            if !tag.matches('"').count().is_multiple_of(2) || tag.contains('<') {
                return Err(format!("bad tag {tag:?}"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or("close without open")?;
                if open != name.trim() {
                    return Err(format!("</{name}> closes <{open}>"));
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
            }
            rest = &rest[gt + 1..];
        }
        if stack.is_empty() { Ok(()) } else { Err(format!("unclosed {stack:?}")) }
    }

    fn chart(x_axis: XAxis) -> Chart {
        Chart {
            title: "e2e <latency> & parts".into(),
            x_label: "percentile".into(),
            y_label: "ms".into(),
            x_axis,
            series: vec![
                Series {
                    name: "e2e".into(),
                    points: vec![(1.0, 0.5), (10.0, 1.0), (1000.0, 7.0), (1e6, 9.0)],
                },
                Series { name: "send→recv".into(), points: vec![(1.0, 0.1), (100.0, 0.4)] },
            ],
        }
    }

    #[test]
    fn percentile_chart_is_well_formed_with_its_series() {
        let svg = chart(XAxis::Percentile).render();
        well_formed(&svg).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(r#"data-name="e2e""#) && svg.contains(r#"data-name="send→recv""#));
        for l in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"] {
            assert!(svg.contains(&format!(">{l}</text>")), "tick {l}");
        }
        assert!(svg.contains("e2e &lt;latency&gt; &amp; parts"));
        // polyline points within the plot area
        let pts = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        for p in pts.split(' ') {
            let (x, y) = p.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (LEFT..=W - RIGHT + 0.1).contains(&x)
                    && (TOP - 0.1..=H - BOTTOM + 0.1).contains(&y)
            );
        }
    }

    #[test]
    fn linear_chart_and_ticks() {
        let svg = chart(XAxis::Linear).render();
        well_formed(&svg).unwrap();
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(7.0, 6.0), 2.0);
        assert_eq!(nice_step(0.3, 6.0), 0.05);
        assert_eq!(percentile_label(3), "99.9%");
        let empty = Chart { series: vec![], ..chart(XAxis::Linear) }.render();
        well_formed(&empty).unwrap();
        assert!(well_formed("<a><b></a>").is_err());
        let log = Chart { x_axis: XAxis::Log, ..chart(XAxis::Linear) }.render();
        well_formed(&log).unwrap();
        // 1 .. 1e6 in the data: a tick per power of ten
        assert!(log.contains(">1000</text>") && log.contains(">1000000</text>"), "{log}");
    }
}
