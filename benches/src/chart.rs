//! The ring's chart, as the seed drew it: looped messages per second against message size,
//! both axes logarithmic, closed and open loop, next to the original node's closed-loop
//! figures on this machine kind (from the issue that set the goals).

use crate::ring::{Mode, RingRun};
use plotters::prelude::*;
use std::path::Path;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// (message size, looped messages per second).
type Point = (f64, f64);

/// The original Iris node, 4 nodes closed-loop (message size, looped msg/s): midpoints of
/// the ranges measured on this machine kind.
const ORIGINAL: [(f64, f64); 3] = [(64.0, 3900.0), (1024.0, 3150.0), (65536.0, 355.0)];

/// The median rate of each size for one mode, in size order.
pub(crate) fn medians(runs: &[RingRun], closed: bool) -> Vec<(f64, f64)> {
    let mut sizes: Vec<usize> = runs.iter().map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
        .into_iter()
        .filter_map(|size| {
            let mut rates: Vec<f64> = runs
                .iter()
                .filter(|r| r.size == size && matches!(r.mode, Mode::Closed(_)) == closed)
                .map(RingRun::rate)
                .collect();
            if rates.is_empty() {
                return None;
            }
            rates.sort_by(f64::total_cmp);
            Some((size as f64, rates[rates.len() / 2]))
        })
        .collect()
}

/// Draws the chart into an SVG file.
pub(crate) fn draw(path: &Path, runs: &[RingRun]) -> Result<(), BoxError> {
    let closed = medians(runs, true);
    let open = medians(runs, false);
    let all = closed.iter().chain(&open).chain(&ORIGINAL);
    let y_max = all.clone().map(|p| p.1).fold(1.0, f64::max) * 2.0;
    let y_min = all.map(|p| p.1).fold(f64::MAX, f64::min).max(1.0) / 2.0;

    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Whispers ring, 4 iris processes: looped messages/s by size",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((32f64..131072f64).log_scale(), (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("message size (bytes)")
        .y_desc("looped messages / s")
        .x_label_formatter(&|x| size_label(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let series: [(&str, &[Point], RGBColor); 3] = [
        ("this node, closed loop (≤1024 in flight)", &closed, BLUE),
        ("this node, open loop", &open, GREEN),
        ("original Iris, closed loop", &ORIGINAL, RED),
    ];
    for (name, points, color) in series {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

fn size_label(x: f64) -> String {
    if x >= 1024.0 {
        format!("{:.0} KiB", x / 1024.0)
    } else {
        format!("{x:.0} B")
    }
}
