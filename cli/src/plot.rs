//! The figures as PNG files: training curves side by side (`train`'s history.png), the
//! assignment's figures in its own form — accuracy above loss, training and validation, for one
//! run (Figures 2, 5, 6) or several overlaid (Figures 3, 4) — the confusion matrix as a heat map,
//! and bar charts of timings (GPU vs CPU per run, `bench` results).
//!
//! Drawing is done by `plotters` into an in-memory RGB buffer with the embedded DejaVu Sans font
//! (no system font lookup, so a figure looks the same on every machine); the buffer is encoded
//! by `image` and written with [`write_atomic`]. It is **not** a plotting library: the layouts are
//! fixed, chosen to read like the matplotlib figures of the Keras course.
//!
//! Every figure has the same frame: a title strip, a legend strip (the legend never sits on top
//! of a curve), then the panels. NaN or infinite values are left out of the curves (a curve is
//! broken where they were); an axis whose values are all equal is given a non-zero range.

use std::io::Cursor;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use wgpu_cnn::error::{Error, Result};
use wgpu_cnn::io::write_atomic;
use wgpu_cnn::metrics::ConfusionMatrix;
use wgpu_cnn::train::{EpochRecord, History};

/// The family name the embedded font is registered under; every text style uses it.
pub const FONT_FAMILY: &str = "DejaVu Sans";

/// DejaVu Sans (its licence is `assets/DejaVuSans.LICENSE.txt`).
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Curve colours, in order: matplotlib's "tab10" palette, so a run's colour is what a Keras user
/// would expect (training blue, validation orange). Runs past the tenth reuse the colours.
pub const CURVE_COLORS: [[u8; 3]; 10] = [
    [31, 119, 180],  // blue
    [255, 127, 14],  // orange
    [44, 160, 44],   // green
    [214, 39, 40],   // red
    [148, 103, 189], // purple
    [140, 86, 75],   // brown
    [227, 119, 194], // pink
    [127, 127, 127], // grey
    [188, 189, 34],  // olive
    [23, 190, 207],  // cyan
];

/// Colour of the "no finite values to plot" note in a panel with nothing to draw (a dark red
/// no curve, grid line or antialiased black text has).
pub const NOTE_COLOR: [u8; 3] = [160, 30, 30];

/// Width × height in pixels of the two-panel figures ([`history_curves`], the figure `train` writes).
pub const PANELS_SIZE: (u32, u32) = (1200, 500);

/// Width × height in pixels of [`assignment_curves`]: the accuracy panel above the loss panel.
pub const STACKED_SIZE: (u32, u32) = (1000, 1000);

/// Width of [`bar_chart`]; its height grows with the bars.
pub const BAR_CHART_WIDTH: u32 = 1100;

/// Width × height in pixels of [`confusion_heatmap`].
pub const HEATMAP_SIZE: (u32, u32) = (800, 700);

/// The figure's one-line title strip, in pixels.
const TITLE_HEIGHT: u32 = 40;
/// One row of the legend strip, in pixels.
const LEGEND_ROW: u32 = 24;
/// Length of the line sample in front of each legend label, in pixels.
const LEGEND_SAMPLE: u32 = 30;

/// `train`'s history.png: two panels side by side — accuracy (training vs validation) and loss
/// (training vs validation) per epoch — with a title, axis labels and a legend. Without
/// validation values only the training curves are drawn.
///
/// Errors: `path` does not end in `.png`; the history has no epochs; the file cannot be written.
pub fn history_curves(path: &Path, title: &str, history: &History) -> Result<()> {
    check_png(path)?;
    if history.epochs.is_empty() {
        return Err(Error::invalid(format!(
            "cannot plot '{title}' to {}: the history has no epochs (train for at least one epoch first)",
            path.display()
        )));
    }
    let epochs = &history.epochs;
    let curve = |label: &str, color: [u8; 3], value: &dyn Fn(&EpochRecord) -> Option<f64>| Curve {
        label: label.to_string(),
        color,
        points: epochs.iter().map(|e| (e.epoch as f64, value(e).unwrap_or(f64::NAN))).collect(),
        dashed: false,
    };
    let mut accuracy = vec![curve("training", CURVE_COLORS[0], &|e| Some(e.accuracy))];
    let mut loss = vec![curve("training", CURVE_COLORS[0], &|e| Some(e.loss))];
    if has_validation(history) {
        accuracy.push(curve("validation", CURVE_COLORS[1], &|e| e.val_accuracy));
        loss.push(curve("validation", CURVE_COLORS[1], &|e| e.val_loss));
    }
    let panels = [
        Panel { caption: "Model accuracy".to_string(), y_desc: "Accuracy", curves: accuracy },
        Panel { caption: "Model loss".to_string(), y_desc: "Loss", curves: loss },
    ];
    render_png(path, PANELS_SIZE, |root| draw_panels(root, title, &panels))
}

/// The assignment's figure form (its Figures 2–6): the accuracy panel above the loss panel, each
/// with every run's training curve (solid) and validation curve (dashed). One run is drawn in
/// the Keras colours, training blue and validation orange; several runs get a colour each, the
/// legend naming "RUN training" and "RUN validation". A run without validation values shows its
/// training curves alone.
///
/// Errors: `path` does not end in `.png`; `runs` is empty; a run has no epochs (the message names
/// it); the file cannot be written.
pub fn assignment_curves(path: &Path, title: &str, runs: &[(String, History)]) -> Result<()> {
    check_png(path)?;
    check_runs(path, title, runs)?;
    let (mut accuracy, mut loss) = (Vec::new(), Vec::new());
    for (i, (name, history)) in runs.iter().enumerate() {
        let points = |value: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
            history.epochs.iter().map(|e| (e.epoch as f64, value(e).unwrap_or(f64::NAN))).collect()
        };
        let (training_color, validation_color) = match runs.len() {
            1 => (CURVE_COLORS[0], CURVE_COLORS[1]),
            _ => (CURVE_COLORS[i % CURVE_COLORS.len()], CURVE_COLORS[i % CURVE_COLORS.len()]),
        };
        let label = |kind: &str| if runs.len() == 1 { kind.to_string() } else { format!("{name} {kind}") };
        let add = |curves: &mut Vec<Curve>, kind: &str, color, dashed, values: Vec<(f64, f64)>| {
            curves.push(Curve { label: label(kind), color, points: values, dashed })
        };
        add(&mut accuracy, "training", training_color, false, points(&|e| Some(e.accuracy)));
        add(&mut loss, "training", training_color, false, points(&|e| Some(e.loss)));
        if has_validation(history) {
            add(&mut accuracy, "validation", validation_color, true, points(&|e| e.val_accuracy));
            add(&mut loss, "validation", validation_color, true, points(&|e| e.val_loss));
        }
    }
    let panels = [
        Panel { caption: "Accuracy".to_string(), y_desc: "Accuracy", curves: accuracy },
        Panel { caption: "Loss".to_string(), y_desc: "Loss", curves: loss },
    ];
    render_png(path, STACKED_SIZE, |root| draw_stacked_panels(root, title, &panels))
}

/// One group of a [`bar_chart`]: its label and its bars, each a series name and a value.
#[derive(Clone, Debug, PartialEq)]
pub struct BarGroup {
    pub label: String,
    pub bars: Vec<(String, f64)>,
}

/// Grouped horizontal bars on a logarithmic axis (values here span a few orders of magnitude:
/// a software GPU and the fast CPU), one colour per series name (the legend names them), each
/// bar labelled with its value and, from the second bar of a group on, its ratio to the group's
/// first ("12,284 (26.92×)").
/// `unit` names the axis ("images/s", "seconds"). Values that are not positive and finite are
/// left out, and named as such in their group.
///
/// Errors: `path` does not end in `.png`; there are no groups or no positive values at all; the
/// file cannot be written.
pub fn bar_chart(path: &Path, title: &str, unit: &str, groups: &[BarGroup]) -> Result<()> {
    check_png(path)?;
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !groups.iter().flat_map(|g| &g.bars).any(|(_, v)| positive(*v)) {
        return Err(Error::invalid(format!(
            "cannot plot '{title}' to {}: there is no positive value to draw",
            path.display()
        )));
    }
    let bars: usize = groups.iter().map(|g| g.bars.len().max(1)).sum();
    let height = TITLE_HEIGHT + 3 * LEGEND_ROW + 90 + BAR_PITCH * bars as u32 + GROUP_GAP * groups.len() as u32;
    render_png(path, (BAR_CHART_WIDTH, height), |root| draw_bars(root, title, unit, groups))
}

/// The confusion matrix as a labelled heat map: true class down the side, predicted class along
/// the bottom, each cell's count written in it, darker blue for more (scaled to the largest
/// count), with a colour bar. A class without a name in `names` is shown by its index.
///
/// Errors: `path` does not end in `.png`; the matrix is empty or its counts are not
/// `classes × classes`; the file cannot be written.
pub fn confusion_heatmap(path: &Path, title: &str, matrix: &ConfusionMatrix, names: &[String]) -> Result<()> {
    check_png(path)?;
    let n = matrix.classes;
    if n == 0 || matrix.counts.len() != n * n {
        return Err(Error::invalid(format!(
            "cannot plot '{title}' to {}: the confusion matrix has {} classes and {} counts (expected classes ≥ 1 and classes² counts)",
            path.display(),
            n,
            matrix.counts.len()
        )));
    }
    let names: Vec<String> = (0..n).map(|c| names.get(c).cloned().unwrap_or_else(|| c.to_string())).collect();
    render_png(path, HEATMAP_SIZE, |root| draw_heatmap(root, title, matrix, &names))
}

/// The heat map's colour for `fraction` of the largest count (clamped to [0, 1]): matplotlib's
/// "Blues" colour map, white-ish at 0 and dark blue at 1.
pub fn heat_color(fraction: f64) -> [u8; 3] {
    const BLUES: [[u8; 3]; 9] = [
        [247, 251, 255],
        [222, 235, 247],
        [198, 219, 239],
        [158, 202, 225],
        [107, 174, 214],
        [66, 146, 198],
        [33, 113, 181],
        [8, 81, 156],
        [8, 48, 107],
    ];
    let t = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.0 };
    // Piecewise-linear between the 9 stops: `segment` is the stop below t, `local` the way to the next.
    let position = t * (BLUES.len() - 1) as f64;
    let segment = (position.floor() as usize).min(BLUES.len() - 2);
    let local = position - segment as f64;
    let (low, high) = (BLUES[segment], BLUES[segment + 1]);
    std::array::from_fn(|i| (f64::from(low[i]) + (f64::from(high[i]) - f64::from(low[i])) * local).round() as u8)
}

// ---------------------------------------------------------------------------------------------
// The frame shared by every figure: font, PNG encoding, title, legend.

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// What drawing with plotters can fail with (turned into [`Error::Image`] by [`render_png`]).
type DrawResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Fails unless `path` ends in `.png` (any case); call it before any drawing.
fn check_png(path: &Path) -> Result<()> {
    match path.extension() {
        Some(ext) if ext.eq_ignore_ascii_case("png") => Ok(()),
        _ => Err(Error::invalid(format!(
            "{}: figures are written as PNG; use a file name ending in .png",
            path.display()
        ))),
    }
}

/// Registers the embedded font under [`FONT_FAMILY`], once per process.
/// Refuses an empty list of runs and a run without epochs, naming the figure, the file and
/// the run.
fn check_runs(path: &Path, title: &str, runs: &[(String, History)]) -> Result<()> {
    if runs.is_empty() {
        return Err(Error::invalid(format!(
            "cannot plot '{title}' to {}: no runs given (pass at least one run's history)",
            path.display()
        )));
    }
    if let Some((name, _)) = runs.iter().find(|(_, h)| h.epochs.is_empty()) {
        return Err(Error::invalid(format!(
            "cannot plot '{title}' to {}: run '{name}' has no epochs (train it for at least one epoch, or leave it out)",
            path.display()
        )));
    }
    Ok(())
}

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the embedded assets/DejaVuSans.ttf is a valid TrueType font");
        }
    });
}

/// The figure font at `size` pixels, black.
fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FONT_FAMILY, size).into_font()).color(&BLACK)
}

fn rgb([r, g, b]: [u8; 3]) -> RGBColor {
    RGBColor(r, g, b)
}

/// Draws a `width × height` figure on white with `draw`, encodes it as PNG and writes it to
/// `path` atomically.
fn render_png(path: &Path, (width, height): (u32, u32), draw: impl FnOnce(&Area) -> DrawResult) -> Result<()> {
    register_font();
    let failed = |what: &str, e: &dyn std::fmt::Display| Error::Image {
        path: path.to_path_buf(),
        message: format!("cannot {what} the figure: {e}"),
    };
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed("draw", &e))?;
        draw(&root).map_err(|e| failed("draw", &e))?;
        root.present().map_err(|e| failed("draw", &e))?;
    }
    let image = image::RgbImage::from_raw(width, height, pixels).expect("the buffer holds width × height RGB pixels");
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).map_err(|e| failed("encode", &e))?;
    write_atomic(path, &bytes)
}

/// Draws `title` centred in the title strip at the top of `root`, in 22 px or, for a title too
/// long for that (a long architecture), the largest size down to 12 px that fits the width.
fn draw_title(root: &Area, title: &str) -> DrawResult {
    let (width, _) = root.dim_in_pixel();
    let mut size = 22.0;
    while size > 12.0 && root.estimate_text_size(title, &font(size))?.0 + 16 > width {
        size -= 1.0;
    }
    let style = font(size).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw_text(title, &style, (width as i32 / 2, TITLE_HEIGHT as i32 / 2))?;
    Ok(())
}

/// One row of the legend: each entry's index and x offset from the row's left edge, and the
/// row's width, in pixels.
#[derive(Default)]
struct LegendRow {
    entries: Vec<(usize, u32)>,
    width: u32,
}

/// Lays the legend's labels out in rows no wider than `max_width` pixels.
fn legend_rows(root: &Area, labels: &[&str], max_width: u32) -> DrawResult<Vec<LegendRow>> {
    const GAP: u32 = 28; // between entries
    let style = font(15.0);
    let mut rows = vec![LegendRow::default()];
    for (i, label) in labels.iter().enumerate() {
        let (text_width, _) = root.estimate_text_size(label, &style)?;
        let entry = LEGEND_SAMPLE + 8 + text_width;
        let row = rows.last_mut().expect("rows starts with one row");
        if !row.entries.is_empty() && row.width + GAP + entry > max_width {
            rows.push(LegendRow { entries: vec![(i, 0)], width: entry });
        } else {
            let x = if row.entries.is_empty() { 0 } else { row.width + GAP };
            row.entries.push((i, x));
            row.width = x + entry;
        }
    }
    Ok(rows)
}

/// Draws the legend strip (a framed box, centred, one line sample + label per entry, wrapped
/// into rows; a dashed sample for a dashed curve) with its top at `top`, and returns the strip's
/// height in pixels.
fn draw_legend(root: &Area, top: u32, entries: &[(&str, [u8; 3], bool)]) -> DrawResult<u32> {
    let (width, _) = root.dim_in_pixel();
    let labels: Vec<&str> = entries.iter().map(|(label, ..)| *label).collect();
    let rows = legend_rows(root, &labels, width - 80)?;
    let height = rows.len() as u32 * LEGEND_ROW + 16;
    let box_width = rows.iter().map(|row| row.width).max().unwrap_or(0) + 24;
    let box_left = (width.saturating_sub(box_width) / 2) as i32;
    let box_top = top as i32 + 4;
    let box_bottom = (top + height) as i32 - 4;
    let frame = [(box_left, box_top), (box_left + box_width as i32, box_bottom)];
    root.draw(&Rectangle::new(frame, RGBColor(160, 160, 160)))?;
    let style = font(15.0).pos(Pos::new(HPos::Left, VPos::Center));
    for (r, row) in rows.iter().enumerate() {
        let left = (width.saturating_sub(row.width) / 2) as i32;
        let y = box_top + 4 + (r as u32 * LEGEND_ROW + LEGEND_ROW / 2) as i32;
        for &(i, x) in &row.entries {
            let (label, color, dashed) = entries[i];
            let x = left + x as i32;
            let line = ShapeStyle { color: rgb(color).to_rgba(), filled: true, stroke_width: 3 };
            let sample = vec![(x, y), (x + LEGEND_SAMPLE as i32, y)];
            if dashed {
                root.draw(&plotters::element::DashedPathElement::new(sample, 7, 5, line))?;
            } else {
                root.draw(&PathElement::new(sample, line))?;
            }
            root.draw(&Circle::new((x + LEGEND_SAMPLE as i32 / 2, y), 3, line))?;
            root.draw_text(label, &style, (x + LEGEND_SAMPLE as i32 + 8, y))?;
        }
    }
    Ok(height)
}

// ---------------------------------------------------------------------------------------------
// Line panels (Figures 2–6).

/// One curve: `(epoch, value)` points; non-finite values are gaps.
struct Curve {
    label: String,
    color: [u8; 3],
    points: Vec<(f64, f64)>,
    /// Drawn dashed (the validation curves of the assignment's figures).
    dashed: bool,
}

/// One panel: a caption, the y axis' name, and its curves (x is always the epoch).
struct Panel {
    caption: String,
    y_desc: &'static str,
    curves: Vec<Curve>,
}

fn has_validation(history: &History) -> bool {
    history.epochs.iter().any(|e| e.val_loss.is_some() || e.val_accuracy.is_some())
}

/// Title, a legend shared by the panels (the first panel's curves), and the panels side by side.
fn draw_panels(root: &Area, title: &str, panels: &[Panel]) -> DrawResult {
    let body = draw_title_and_legend(root, title, panels)?;
    for (area, panel) in body.split_evenly((1, panels.len())).iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    Ok(())
}

/// The same with the panels one above the other.
fn draw_stacked_panels(root: &Area, title: &str, panels: &[Panel]) -> DrawResult {
    let body = draw_title_and_legend(root, title, panels)?;
    for (area, panel) in body.split_evenly((panels.len(), 1)).iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    Ok(())
}

/// The title strip and the legend of the first panel's curves; returns the area below them.
fn draw_title_and_legend<'a>(root: &Area<'a>, title: &str, panels: &[Panel]) -> DrawResult<Area<'a>> {
    draw_title(root, title)?;
    let entries: Vec<(&str, [u8; 3], bool)> =
        panels[0].curves.iter().map(|c| (c.label.as_str(), c.color, c.dashed)).collect();
    let legend = draw_legend(root, TITLE_HEIGHT, &entries)?;
    Ok(root.split_vertically(TITLE_HEIGHT + legend).1)
}

/// The x range of `curves`' epochs and the y range of their finite values, each padded so no
/// point sits on the frame and never empty.
fn ranges(curves: &[Curve]) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let bounds = |values: &mut dyn Iterator<Item = f64>| {
        values
            .filter(|v| v.is_finite())
            .fold(None, |acc: Option<(f64, f64)>, v| Some(acc.map_or((v, v), |(low, high)| (low.min(v), high.max(v)))))
    };
    let (x_low, x_high) = bounds(&mut curves.iter().flat_map(|c| c.points.iter().map(|p| p.0))).unwrap_or((1.0, 1.0));
    // Half an epoch either side: a one-epoch history still gets a range, and end markers show whole.
    let x = x_low - 0.5..x_high + 0.5;
    let y = match bounds(&mut curves.iter().flat_map(|c| c.points.iter().map(|p| p.1))) {
        None => 0.0..1.0,
        Some((low, high)) => {
            let span = high - low;
            // All equal: a range of ±5% of the value (at least ±0.05) around it.
            let pad = if span > 1e-12 * high.abs().max(1.0) { span * 0.08 } else { (high.abs() * 0.05).max(0.05) };
            low - pad..high + pad
        }
    };
    (x, y)
}

/// Decimals that tell ticks apart on an axis spanning `span`.
fn decimals_for(span: f64) -> usize {
    if !(span.is_finite() && span > 0.0) {
        return 2;
    }
    // Ticks are about span / 5 apart; show one significant digit of that step.
    (-(span / 5.0).log10()).ceil().clamp(0.0, 6.0) as usize
}

fn draw_panel(area: &Area, panel: &Panel) -> DrawResult {
    let (x_range, y_range) = ranges(&panel.curves);
    let epochs = (x_range.end - x_range.start - 1.0).round().max(1.0) as usize;
    let decimals = decimals_for(y_range.end - y_range.start);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.caption, font(19.0))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range, y_range)?;
    // Epochs are whole numbers: label only the ticks that fall on one.
    let epoch_label =
        |v: &f64| if (v - v.round()).abs() < 1e-6 { format!("{}", v.round() as i64) } else { String::new() };
    let value_label = |v: &f64| format!("{v:.decimals$}");
    chart
        .configure_mesh()
        .x_desc("Epoch")
        .y_desc(panel.y_desc)
        .x_labels((epochs + 1).min(12))
        .y_labels(8)
        .x_label_formatter(&epoch_label)
        .y_label_formatter(&value_label)
        .label_style(font(14.0))
        .axis_desc_style(font(16.0))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()?;
    if panel.curves.iter().all(|c| finite_segments(&c.points).is_empty()) {
        let plot = chart.plotting_area();
        let (width, height) = plot.dim_in_pixel();
        let note = rgb(NOTE_COLOR);
        let style = font(16.0).color(&note).pos(Pos::new(HPos::Center, VPos::Center));
        plot.strip_coord_spec().draw_text("no finite values to plot", &style, (width as i32 / 2, height as i32 / 2))?;
    }
    for curve in &panel.curves {
        let style = ShapeStyle { color: rgb(curve.color).to_rgba(), filled: true, stroke_width: 2 };
        for segment in finite_segments(&curve.points) {
            if curve.dashed {
                chart.draw_series(DashedLineSeries::new(segment.clone(), 9, 6, style))?;
                chart.draw_series(segment.iter().map(|&p| Circle::new(p, 3, style)))?;
            } else {
                chart.draw_series(LineSeries::new(segment, style).point_size(3))?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bar charts.

/// Pixels per bar, and between groups.
const BAR_PITCH: u32 = 30;
const GROUP_GAP: u32 = 22;

fn draw_bars(root: &Area, title: &str, unit: &str, groups: &[BarGroup]) -> DrawResult {
    draw_title(root, title)?;
    // One colour per series name, in order of first appearance.
    let mut series: Vec<&str> = Vec::new();
    for (name, _) in groups.iter().flat_map(|g| &g.bars) {
        if !series.contains(&name.as_str()) {
            series.push(name);
        }
    }
    let color = |name: &str| CURVE_COLORS[series.iter().position(|s| *s == name).unwrap_or(0) % CURVE_COLORS.len()];
    let entries: Vec<(&str, [u8; 3], bool)> = series.iter().map(|s| (*s, color(s), false)).collect();
    let legend = draw_legend(root, TITLE_HEIGHT, &entries)?;
    let (_, body) = root.split_vertically(TITLE_HEIGHT + legend);

    let values = groups.iter().flat_map(|g| g.bars.iter().map(|(_, v)| *v)).filter(|v| v.is_finite() && *v > 0.0);
    let (low, high) = values.fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    // Whole decades around the values, with room on the right for the labels.
    let (low, high) = (10f64.powf(low.log10().floor()), 10f64.powf(high.log10().ceil() + 0.6));
    let mut label_width = 0;
    for group in groups {
        label_width = label_width.max(root.estimate_text_size(&group.label, &font(15.0))?.0);
    }
    let rows: usize = groups.iter().map(|g| g.bars.len().max(1)).sum::<usize>() + groups.len();
    let mut chart = ChartBuilder::on(&body)
        .margin(16)
        .margin_right(30)
        .x_label_area_size(52)
        .y_label_area_size(label_width + 24)
        .build_cartesian_2d((low..high).log_scale(), 0.0..rows as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc(unit)
        .x_label_formatter(&|v| group_thousands_f64(*v))
        .label_style(font(14.0))
        .axis_desc_style(font(16.0))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()?;
    let plot = chart.plotting_area();
    let value_style = font(14.0).pos(Pos::new(HPos::Left, VPos::Center));
    let mut row = 0.0;
    for group in groups {
        // The group's label, at the height of its first bar.
        let (_, y) = plot.map_coordinate(&(low, rows as f64 - row - 0.5));
        let (x, _) = plot.get_pixel_range();
        let style = font(15.0).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw_text(&group.label, &style, (x.start - 10, y))?;
        let first = group.bars.first().map(|(_, v)| *v).filter(|v| v.is_finite() && *v > 0.0);
        for (i, (name, value)) in group.bars.iter().enumerate() {
            let (top, bottom) = (rows as f64 - row - 0.1, rows as f64 - row - 0.9);
            if value.is_finite() && *value > 0.0 {
                let fill = rgb(color(name)).filled();
                plot.draw(&Rectangle::new([(low, bottom), (*value, top)], fill))?;
                let ratio = match first {
                    Some(first) if i > 0 => format!(" ({:.2}×)", value / first),
                    _ => String::new(),
                };
                // The legend names the series: the bar says its value.
                let text = format!("{}{ratio}", group_thousands_f64(*value));
                plot.draw(&Text::new(text, (*value * 1.08, (top + bottom) / 2.0), value_style.clone()))?;
            } else {
                let text = format!("{name}: no value");
                plot.draw(&Text::new(text, (low * 1.1, (top + bottom) / 2.0), value_style.clone()))?;
            }
            row += 1.0;
        }
        row += 1.0;
    }
    Ok(())
}

/// 12345.6 → "12,346", 4.27 → "4.27", 0.0123 → "0.0123": a value as a person reads it.
fn group_thousands_f64(value: f64) -> String {
    if value >= 1000.0 {
        wgpu_cnn::model::group_thousands(value.round() as usize)
    } else if value >= 10.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// The runs of consecutive points whose values are finite (a NaN breaks the curve).
fn finite_segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    points
        .split(|(x, y)| !(x.is_finite() && y.is_finite()))
        .filter(|segment| !segment.is_empty())
        .map(<[(f64, f64)]>::to_vec)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The confusion heat map.

fn draw_heatmap(root: &Area, title: &str, matrix: &ConfusionMatrix, names: &[String]) -> DrawResult {
    let n = matrix.classes;
    let (width, height) = root.dim_in_pixel();
    draw_title(root, title)?;

    // Layout, in pixels: [axis name | row labels | grid | colour bar + its labels], and below the
    // grid [column labels (vertical) | axis name].
    let label_style = font(14.0);
    let mut label_width = 0;
    for name in names {
        label_width = label_width.max(root.estimate_text_size(name, &label_style)?.0);
    }
    let max_count = matrix.counts.iter().copied().max().unwrap_or(0);
    let (bar_label_width, _) = root.estimate_text_size(&max_count.to_string(), &label_style)?;
    let axis_name = 28; // "True label" / "Predicted label"
    let left = axis_name + label_width + 10;
    let top = TITLE_HEIGHT + 10;
    let right_reserve = 20 + 18 + 8 + bar_label_width + 16; // gap, bar, tick gap, labels, margin
    let bottom_reserve = label_width + 10 + axis_name;
    let grid =
        (width.saturating_sub(left + right_reserve)).min(height.saturating_sub(top + bottom_reserve)).max(n as u32);
    let cell = grid / n as u32;
    let grid = cell * n as u32;
    let (left, top, cell) = (left as i32, top as i32, cell as i32);
    let grid_end = (left + grid as i32, top + grid as i32);

    // Cells, with their counts in black on light cells and white on dark ones.
    let count_size = (f64::from(cell) * 0.3).clamp(8.0, 18.0);
    for t in 0..n {
        for p in 0..n {
            let count = matrix.get(t, p);
            let fraction = if max_count == 0 { 0.0 } else { count as f64 / max_count as f64 };
            let (x, y) = (left + p as i32 * cell, top + t as i32 * cell);
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], rgb(heat_color(fraction)).filled()))?;
            if cell >= 14 {
                let ink = if fraction > 0.5 { WHITE } else { BLACK };
                let style = font(count_size).color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                root.draw_text(&count.to_string(), &style, (x + cell / 2, y + cell / 2))?;
            }
        }
    }
    root.draw(&Rectangle::new([(left, top), grid_end], BLACK))?;

    // Row labels right-aligned against the grid; column labels vertical, reading upwards, ending
    // just under the grid.
    let row_style = label_style.pos(Pos::new(HPos::Right, VPos::Center));
    let column_style = label_style.transform(FontTransform::Rotate270).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, name) in names.iter().enumerate() {
        let middle = i as i32 * cell + cell / 2;
        root.draw_text(name, &row_style, (left - 8, top + middle))?;
        root.draw_text(name, &column_style, (left + middle, grid_end.1 + 8))?;
    }
    let axis_style = font(16.0).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw_text(
        "Predicted label",
        &axis_style,
        ((left + grid_end.0) / 2, height as i32 - axis_name as i32 / 2 - 4),
    )?;
    root.draw_text(
        "True label",
        &axis_style.transform(FontTransform::Rotate270),
        (axis_name as i32 / 2 + 2, (top + grid_end.1) / 2),
    )?;

    // Colour bar: the colour map from 0 (bottom) to the largest count (top), with round ticks.
    let bar_left = grid_end.0 + 20;
    let bar_right = bar_left + 18;
    for y in top..grid_end.1 {
        let fraction = f64::from(grid_end.1 - 1 - y) / f64::from((grid_end.1 - 1 - top).max(1));
        root.draw(&PathElement::new(vec![(bar_left, y), (bar_right, y)], rgb(heat_color(fraction))))?;
    }
    root.draw(&Rectangle::new([(bar_left, top), (bar_right, grid_end.1)], BLACK))?;
    let tick_style = label_style.pos(Pos::new(HPos::Left, VPos::Center));
    let bar_height = f64::from(grid_end.1 - top);
    for value in count_ticks(max_count) {
        let fraction = if max_count == 0 { 0.0 } else { value as f64 / max_count as f64 };
        let y = grid_end.1 - (fraction * bar_height).round() as i32;
        root.draw(&PathElement::new(vec![(bar_right, y), (bar_right + 4, y)], BLACK))?;
        root.draw_text(&value.to_string(), &tick_style, (bar_right + 8, y))?;
    }
    Ok(())
}

/// Colour-bar ticks for counts 0..=`max`: 0 and multiples of a round step (1, 2 or 5 × 10^k),
/// about 5 of them, never past `max`.
fn count_ticks(max: u64) -> Vec<u64> {
    // Up to 5 × 10^18, which leaves at most 3 ticks for the largest u64.
    let step = (0..19)
        .flat_map(|k| [1, 2, 5].map(|m| m * 10u64.pow(k)))
        .find(|step| max / step <= 5)
        .expect("u64::MAX / (5 × 10^18) is 3");
    (0..=max / step).map(|k| k * step).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_color_runs_from_white_to_dark_blue() {
        assert_eq!(heat_color(0.0), [247, 251, 255]);
        assert_eq!(heat_color(1.0), [8, 48, 107]);
        assert_eq!(heat_color(0.5), [107, 174, 214]);
        assert_eq!(heat_color(f64::NAN), heat_color(0.0));
        assert_eq!(heat_color(7.0), heat_color(1.0));
    }

    #[test]
    fn finite_segments_break_at_nan() {
        let points = [(1.0, 0.5), (2.0, f64::NAN), (3.0, 0.7), (4.0, 0.8), (5.0, f64::INFINITY)];
        assert_eq!(finite_segments(&points), vec![vec![(1.0, 0.5)], vec![(3.0, 0.7), (4.0, 0.8)]]);
    }

    #[test]
    fn ranges_are_never_empty() {
        let curve = |points: Vec<(f64, f64)>| Curve { label: String::new(), color: [0; 3], dashed: false, points };
        let (x, y) = ranges(&[curve(vec![(1.0, 0.3), (2.0, 0.3)])]);
        assert_eq!(x, 0.5..2.5);
        assert!(y.start < 0.3 && y.end > 0.3, "{y:?}");
        let (_, y) = ranges(&[curve(vec![(1.0, f64::NAN)])]);
        assert_eq!(y, 0.0..1.0);
    }

    #[test]
    fn count_ticks_are_round_and_within_the_largest_count() {
        assert_eq!(count_ticks(0), [0]);
        assert_eq!(count_ticks(2), [0, 1, 2]);
        assert_eq!(count_ticks(850), [0, 200, 400, 600, 800]);
        assert_eq!(count_ticks(1000), [0, 200, 400, 600, 800, 1000]);
        assert_eq!(count_ticks(12), [0, 5, 10]);
        assert_eq!(count_ticks(30), [0, 10, 20, 30]);
        assert_eq!(count_ticks(u64::MAX).len(), 4);
    }

    #[test]
    fn decimals_follow_the_axis_span() {
        assert_eq!(decimals_for(1.0), 1);
        assert_eq!(decimals_for(0.2), 2);
        assert_eq!(decimals_for(50.0), 0);
        assert_eq!(decimals_for(0.0), 2);
    }
}
