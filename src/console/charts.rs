//! Line charts as inline SVG, drawn on the server.

use std::fmt::Write as _;

use super::html::esc;

const W: f64 = 320.0;
const H: f64 = 120.0;
const PAD: f64 = 6.0;

/// A chart of `points` (x: Unix time, y: value) titled `title`, with `fmt`
/// formatting the largest and the latest value for the caption. An empty
/// series draws a frame saying so.
pub fn line(title: &str, points: &[(f64, f64)], fmt: &dyn Fn(f64) -> String) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\"><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\" \
preserveAspectRatio=\"none\"><title>{t}</title>\
<rect class=\"frame\" x=\"0.5\" y=\"0.5\" width=\"{w}\" height=\"{h}\"/>",
        t = esc(title),
        w = W - 1.0,
        h = H - 1.0
    );
    let pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if pts.is_empty() {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no runs yet</text></svg>\
<figcaption>{}</figcaption></figure>",
            W / 2.0,
            H / 2.0,
            esc(title)
        );
        return out;
    }
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    let ymax = pts.iter().fold(0.0f64, |m, (_, y)| m.max(*y));
    let sx = |x: f64| {
        if x1 > x0 {
            PAD + (x - x0) / (x1 - x0) * (W - 2.0 * PAD)
        } else {
            W / 2.0
        }
    };
    let sy = |y: f64| {
        if ymax > 0.0 {
            H - PAD - y / ymax * (H - 2.0 * PAD)
        } else {
            H - PAD
        }
    };
    out.push_str("<polyline class=\"series\" points=\"");
    for (i, (x, y)) in pts.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{:.1},{:.1}", sx(*x), sy(*y));
    }
    out.push_str("\"/>");
    for (x, y) in &pts {
        let _ = write!(
            out,
            "<circle class=\"dot\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"><title>{}</title></circle>",
            sx(*x),
            sy(*y),
            esc(&fmt(*y))
        );
    }
    let last = pts.last().map_or(0.0, |p| p.1);
    let _ = write!(
        out,
        "</svg><figcaption>{}: latest {}, highest {} ({} runs)</figcaption></figure>",
        esc(title),
        esc(&fmt(last)),
        esc(&fmt(ymax)),
        pts.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_vertex_per_point_and_escaped_title() {
        let svg = line(
            "rate <b>",
            &[(1.0, 10.0), (2.0, 20.0), (3.0, f64::NAN), (4.0, 5.0)],
            &|v| format!("{v}"),
        );
        let poly = svg.split("points=\"").nth(1).unwrap();
        let poly = &poly[..poly.find('"').unwrap()];
        assert_eq!(poly.split(' ').count(), 3, "{poly}");
        assert!(svg.contains("rate &lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains("latest 5, highest 20 (3 runs)"), "{svg}");
        // The highest value touches the top margin, zero the bottom.
        assert!(poly.contains(&format!("{:.1}", PAD)), "{poly}");
    }

    #[test]
    fn empty_series_says_so() {
        let svg = line("duration", &[], &|v| format!("{v}"));
        assert!(svg.contains("no runs yet") && !svg.contains("polyline"));
    }
}
