//! The figures: each writes a PNG of the promised size that holds the curves (found by their
//! colours in the panel area, below the title and legend), survives odd histories, and refuses
//! what it cannot draw.
//!
//! Set `WGPU_CNN_PLOT_SAMPLES=/some/folder` to keep a copy of every figure drawn here to look at.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use image::RgbImage;
use wgpu_cnn::metrics::ConfusionMatrix;
use wgpu_cnn::train::{EpochRecord, History};
use wgpu_cnn_cli::plot::{
    assignment_curves, bar_chart, confusion_heatmap, heat_color, history_curves, BarGroup, BAR_CHART_WIDTH,
    CURVE_COLORS, HEATMAP_SIZE, NOTE_COLOR, PANELS_SIZE, STACKED_SIZE,
};

const BLUE: [u8; 3] = CURVE_COLORS[0];
const ORANGE: [u8; 3] = CURVE_COLORS[1];
const GREEN: [u8; 3] = CURVE_COLORS[2];

/// Rows above this are title and legend; the panels are below.
const PANELS_TOP: u32 = 100;

fn record(epoch: usize, loss: f64, accuracy: f64, val_loss: Option<f64>, val_accuracy: Option<f64>) -> EpochRecord {
    EpochRecord { epoch, loss, accuracy, val_loss, val_accuracy, seconds: 1.0 }
}

/// A plausible 20-epoch run: training keeps improving, validation flattens and its loss turns up.
fn training_run(shift: f64) -> History {
    let epochs = (1..=20)
        .map(|e| {
            let t = e as f64;
            let accuracy = 0.75 - 0.4 * (-t / 5.0).exp() - shift;
            let val_accuracy = 0.68 - 0.35 * (-t / 4.0).exp() - shift;
            let loss = 0.7 + 1.2 * (-t / 5.0).exp() + shift;
            let val_loss = 0.95 + 0.9 * (-t / 3.0).exp() + 0.01 * t + shift;
            record(e, loss, accuracy, Some(val_loss), Some(val_accuracy))
        })
        .collect();
    History { epochs }
}

fn without_validation(history: &History) -> History {
    let epochs =
        history.epochs.iter().map(|e| EpochRecord { val_loss: None, val_accuracy: None, ..e.clone() }).collect();
    History { epochs }
}

/// Decodes the PNG at `path` (and keeps a copy where `WGPU_CNN_PLOT_SAMPLES` says).
fn open(path: &Path) -> RgbImage {
    if let Ok(folder) = std::env::var("WGPU_CNN_PLOT_SAMPLES") {
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(path, PathBuf::from(folder).join(path.file_name().unwrap())).unwrap();
    }
    image::open(path).unwrap_or_else(|e| panic!("{}: not a readable PNG: {e}", path.display())).into_rgb8()
}

/// Pixels of exactly `color` with `x` in `columns` and `y` below the title and legend.
fn count_in(image: &RgbImage, color: [u8; 3], columns: std::ops::Range<u32>) -> usize {
    image.enumerate_pixels().filter(|(x, y, p)| columns.contains(x) && *y >= PANELS_TOP && p.0 == color).count()
}

fn left_panel(image: &RgbImage) -> std::ops::Range<u32> {
    0..image.width() / 2
}

fn right_panel(image: &RgbImage) -> std::ops::Range<u32> {
    image.width() / 2..image.width()
}

/// Fails unless the image has many colours (text antialiasing, curves, grid) and a fair share of
/// non-white pixels.
fn assert_not_blank(image: &RgbImage) {
    let colours: HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    let inked = image.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    let share = inked as f64 / (image.width() * image.height()) as f64;
    assert!(colours.len() > 20, "only {} distinct colours", colours.len());
    assert!(share > 0.02, "only {:.2}% of the pixels are not white", share * 100.0);
}

/// The folder holds exactly `names` (no temporary file left behind).
fn assert_folder_holds(folder: &Path, names: &[&str]) {
    let mut found: Vec<String> =
        std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    found.sort();
    assert_eq!(found, names);
}

#[test]
fn history_curves_draws_training_and_validation_in_both_panels() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("history_curves.png");
    history_curves(&path, "Baseline CNN, 20 epochs", &training_run(0.0)).unwrap();
    let image = open(&path);
    assert_eq!(image.dimensions(), PANELS_SIZE);
    assert_eq!(image.dimensions(), (1200, 500));
    assert_not_blank(&image);
    for (panel, columns) in [("accuracy", left_panel(&image)), ("loss", right_panel(&image))] {
        let (blue, orange) = (count_in(&image, BLUE, columns.clone()), count_in(&image, ORANGE, columns));
        assert!(blue > 300, "{panel} panel: {blue} pixels of the training colour");
        assert!(orange > 300, "{panel} panel: {orange} pixels of the validation colour");
    }
    assert_folder_holds(folder.path(), &["history_curves.png"]);
}

#[test]
fn history_without_validation_draws_no_validation_curve() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("no_validation.png");
    history_curves(&path, "No validation", &without_validation(&training_run(0.0))).unwrap();
    let image = open(&path);
    assert!(count_in(&image, BLUE, left_panel(&image)) > 300);
    assert_eq!(image.pixels().filter(|p| p.0 == ORANGE).count(), 0, "validation colour drawn without validation data");
}

#[test]
fn a_one_epoch_history_still_shows_its_points() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("one_epoch.png");
    history_curves(&path, "One epoch", &History { epochs: vec![record(1, 1.9, 0.31, Some(1.7), Some(0.38))] }).unwrap();
    let image = open(&path);
    assert_eq!(image.dimensions(), PANELS_SIZE);
    for columns in [left_panel(&image), right_panel(&image)] {
        // A filled marker of radius 3 is about 30 pixels.
        assert!(count_in(&image, BLUE, columns.clone()) >= 15, "training point missing");
        assert!(count_in(&image, ORANGE, columns) >= 15, "validation point missing");
    }
}

#[test]
fn nan_and_missing_values_are_skipped() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("nan.png");
    let mut history = training_run(0.0);
    history.epochs[3].loss = f64::NAN;
    history.epochs[4].accuracy = f64::INFINITY;
    history.epochs[7].val_loss = None;
    history.epochs[8].val_accuracy = Some(f64::NAN);
    history_curves(&path, "With NaN", &history).unwrap();
    let image = open(&path);
    assert_eq!(count_in(&image, NOTE_COLOR, 0..image.width()), 0, "panels with values claim to have none");
    for columns in [left_panel(&image), right_panel(&image)] {
        assert!(count_in(&image, BLUE, columns.clone()) > 300);
        assert!(count_in(&image, ORANGE, columns) > 300);
    }
}

#[test]
fn a_history_of_only_nan_still_draws_empty_panels() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("all_nan.png");
    let history = History { epochs: vec![record(1, f64::NAN, f64::NAN, None, None); 3] };
    history_curves(&path, "Diverged", &history).unwrap();
    let image = open(&path);
    assert_eq!(image.dimensions(), PANELS_SIZE);
    assert_eq!(count_in(&image, BLUE, 0..image.width()), 0);
    // Each panel says why it is empty.
    for columns in [left_panel(&image), right_panel(&image)] {
        assert!(count_in(&image, NOTE_COLOR, columns) > 20, "no note in an empty panel");
    }
}

#[test]
fn all_equal_values_get_an_axis_with_a_range() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("flat.png");
    // Training only, so every value of a panel is the same number.
    let history = History { epochs: (1..=5).map(|e| record(e, 2.3, 0.1, None, None)).collect() };
    history_curves(&path, "Flat", &history).unwrap();
    let image = open(&path);
    // A horizontal line across the panel: hundreds of pixels, in both panels.
    for columns in [left_panel(&image), right_panel(&image)] {
        let drawn = count_in(&image, BLUE, columns.clone());
        assert!(drawn > 300, "flat curve: {drawn} pixels in {columns:?}");
    }
}

#[test]
fn an_empty_history_is_an_error_and_writes_nothing() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("empty.png");
    let message = history_curves(&path, "Nothing", &History::default()).unwrap_err().to_string();
    assert!(message.contains("no epochs"), "{message}");
    assert_folder_holds(folder.path(), &[]);
}

#[test]
fn a_run_without_validation_shows_its_training_curves_alone() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("mixed.png");
    let runs = vec![
        ("L1 = 0.0001".to_string(), training_run(0.0)),
        ("L1 = 0.01".to_string(), without_validation(&training_run(0.05))),
    ];
    assignment_curves(&path, "Figure 4: L1 penalty", &runs).unwrap();
    let image = open(&path);
    let half = image.height() / 2;
    for rows in [PANELS_TOP..half, half..image.height()] {
        assert!(count_in_rows(&image, ORANGE, rows) > 300, "the run without validation is missing");
    }
}

#[test]
fn many_runs_of_single_epochs_do_not_fail() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("many.png");
    let runs: Vec<(String, History)> = (0..12)
        .map(|i| {
            let accuracy = 0.1 + 0.05 * i as f64;
            (format!("run {i}"), History { epochs: vec![record(1, 2.0 - accuracy, accuracy, None, None)] })
        })
        .collect();
    assignment_curves(&path, "Twelve one-epoch runs", &runs).unwrap();
    let image = open(&path);
    assert_eq!(image.dimensions(), STACKED_SIZE);
    for color in CURVE_COLORS {
        assert!(count_in_rows(&image, color, PANELS_TOP..image.height() / 2) >= 15, "colour {color:?} missing");
    }
}

#[test]
fn the_curves_refuse_no_runs_and_runs_without_epochs() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("curves.png");
    let message = assignment_curves(&path, "None", &[]).unwrap_err().to_string();
    assert!(message.contains("no runs"), "{message}");
    let runs = vec![("good".to_string(), training_run(0.0)), ("deep".to_string(), History::default())];
    let message = assignment_curves(&path, "One empty", &runs).unwrap_err().to_string();
    assert!(message.contains("'deep' has no epochs"), "{message}");
    assert_folder_holds(folder.path(), &[]);
}

fn class_names() -> Vec<String> {
    wgpu_cnn::data::CLASS_NAMES.iter().map(|s| s.to_string()).collect()
}

/// A 10-class matrix with a strong diagonal (the largest count, 850, is cat → cat) and some
/// confusions.
fn cifar_like_matrix() -> ConfusionMatrix {
    let mut counts = vec![0u64; 100];
    for t in 0..10 {
        for p in 0..10 {
            counts[t * 10 + p] = if t == p { 500 + 35 * ((t * 7) % 11) as u64 } else { ((t * 13 + p * 7) % 40) as u64 };
        }
    }
    counts[3 * 10 + 5] = 210; // cat → dog
    counts[5 * 10 + 3] = 180; // dog → cat
    ConfusionMatrix { classes: 10, counts }
}

#[test]
fn confusion_heatmap_draws_a_labelled_grid_from_light_to_dark() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("confusion_heatmap.png");
    let matrix = cifar_like_matrix();
    let max = *matrix.counts.iter().max().unwrap();
    confusion_heatmap(&path, "Confusion matrix (test set)", &matrix, &class_names()).unwrap();
    let image = open(&path);
    assert_eq!(image.dimensions(), HEATMAP_SIZE);
    assert_eq!(image.dimensions(), (800, 700));
    assert_not_blank(&image);
    // The largest count's cell is the darkest colour: a whole cell (≥ 40×40 pixels less its text).
    let darkest = image.pixels().filter(|p| p.0 == heat_color(1.0)).count();
    assert!(darkest > 1200, "{darkest} pixels of the darkest colour");
    // Every cell's colour appears (the colour bar has them too, but cells are big).
    for &count in &matrix.counts {
        let color = heat_color(count as f64 / max as f64);
        assert!(image.pixels().any(|p| p.0 == color), "count {count}: colour {color:?} missing");
    }
    // Counts on dark cells are written in white.
    assert!(image.pixels().filter(|p| p.0 == [255, 255, 255]).count() > 1000);
    assert_folder_holds(folder.path(), &["confusion_heatmap.png"]);
}

#[test]
fn confusion_heatmap_of_an_all_zero_or_unnamed_matrix_does_not_fail() {
    let folder = tempfile::tempdir().unwrap();
    let zero = folder.path().join("zero.png");
    confusion_heatmap(&zero, "Nothing counted", &ConfusionMatrix::new(3, &[], &[]).unwrap(), &[]).unwrap();
    assert_eq!(open(&zero).dimensions(), HEATMAP_SIZE);
    let one = folder.path().join("one.png");
    let matrix = ConfusionMatrix::new(1, &[0, 0], &[0, 0]).unwrap();
    confusion_heatmap(&one, "One class", &matrix, &["only".to_string()]).unwrap();
    let image = open(&one);
    assert!(image.pixels().filter(|p| p.0 == heat_color(1.0)).count() > 10_000, "the single cell is not dark");
}

#[test]
fn confusion_heatmap_refuses_a_malformed_matrix() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("bad.png");
    let message = confusion_heatmap(&path, "Bad", &ConfusionMatrix { classes: 3, counts: vec![1; 8] }, &[])
        .unwrap_err()
        .to_string();
    assert!(message.contains("3 classes and 8 counts"), "{message}");
    assert!(confusion_heatmap(&path, "Empty", &ConfusionMatrix { classes: 0, counts: vec![] }, &[]).is_err());
}

#[test]
fn every_figure_refuses_a_path_that_is_not_png() {
    let folder = tempfile::tempdir().unwrap();
    let history = training_run(0.0);
    let matrix = cifar_like_matrix();
    for name in ["figure.jpg", "figure", "figure.png.txt"] {
        let path = folder.path().join(name);
        for result in [
            history_curves(&path, "t", &history),
            confusion_heatmap(&path, "t", &matrix, &class_names()),
            assignment_curves(&path, "t", &[("a".to_string(), history.clone())]),
            bar_chart(&path, "t", "s", &[BarGroup { label: "a".into(), bars: vec![("x".into(), 1.0)] }]),
        ] {
            let message = result.unwrap_err().to_string();
            assert!(message.contains(".png"), "{name}: {message}");
        }
    }
    assert_folder_holds(folder.path(), &[]);
    // The extension is matched without regard to case.
    let upper = folder.path().join("FIGURE.PNG");
    history_curves(&upper, "upper case", &history).unwrap();
    assert_eq!(open(&upper).dimensions(), PANELS_SIZE);
}

/// Pixels of exactly `color` with `y` in `rows` (the stacked panels are one above the other).
fn count_in_rows(image: &RgbImage, color: [u8; 3], rows: std::ops::Range<u32>) -> usize {
    image.enumerate_pixels().filter(|(_, y, p)| rows.contains(y) && p.0 == color).count()
}

#[test]
fn the_assignments_figure_has_accuracy_above_loss_with_training_and_validation() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("figure-2.png");
    assignment_curves(&path, "Figure 2", &[("base".to_string(), training_run(0.0))]).unwrap();
    let image = open(&path);
    assert_eq!(image.dimensions(), STACKED_SIZE);
    assert_not_blank(&image);
    let half = image.height() / 2;
    for (panel, rows) in [("accuracy (top)", PANELS_TOP..half), ("loss (bottom)", half..image.height())] {
        let (blue, orange) = (count_in_rows(&image, BLUE, rows.clone()), count_in_rows(&image, ORANGE, rows));
        assert!(blue > 300, "{panel}: {blue} pixels of the training colour");
        // Dashed: fewer pixels than the solid line of the same data, but well there.
        assert!(orange > 150 && orange < blue, "{panel}: {orange} pixels of the dashed validation colour vs {blue}");
    }
}

#[test]
fn the_assignments_figure_of_several_runs_gives_each_run_a_colour() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("figure-3.png");
    let runs: Vec<(String, History)> = [0.1, 0.05, 0.0]
        .iter()
        .enumerate()
        .map(|(i, &shift)| (format!("{} images", 1000 << i), training_run(shift)))
        .collect();
    assignment_curves(&path, "Figure 3", &runs).unwrap();
    let image = open(&path);
    let half = image.height() / 2;
    for rows in [PANELS_TOP..half, half..image.height()] {
        for color in [BLUE, ORANGE, GREEN] {
            assert!(count_in_rows(&image, color, rows.clone()) > 300, "run colour {color:?} in rows {rows:?}");
        }
    }
    assert_eq!(image.pixels().filter(|p| p.0 == CURVE_COLORS[3]).count(), 0, "a fourth run's colour");
}

#[test]
fn a_bar_chart_draws_every_series_on_a_log_axis_and_refuses_nothing_to_draw() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("bench.png");
    let groups = vec![
        BarGroup { label: "base".into(), bars: vec![("GPU".into(), 450.0), ("CPU fast".into(), 12_300.0)] },
        BarGroup { label: "deep".into(), bars: vec![("GPU".into(), 1_000.0), ("CPU fast".into(), f64::NAN)] },
    ];
    bar_chart(&path, "Training throughput", "images/s", &groups).unwrap();
    let image = open(&path);
    assert_eq!(image.width(), BAR_CHART_WIDTH);
    let (blue, orange) = (count_in(&image, BLUE, 0..image.width()), count_in(&image, ORANGE, 0..image.width()));
    // Two GPU bars, one CPU bar (the NaN is left out): the longer CPU bar still has more ink.
    assert!(blue > 4_000 && orange > 4_000, "bars: {blue} blue, {orange} orange pixels");
    assert_eq!(image.pixels().filter(|p| p.0 == GREEN).count(), 0, "a third series' colour");
    let empty = [BarGroup { label: "x".into(), bars: vec![("GPU".into(), 0.0)] }];
    let message = bar_chart(&folder.path().join("empty.png"), "t", "s", &empty).unwrap_err().to_string();
    assert!(message.contains("no positive value"), "{message}");
}

#[test]
fn a_title_too_long_for_the_figure_is_shrunk_to_fit_not_clipped() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("long.png");
    let title = "Figure 2: accuracy and loss of the training set and the validation set: \
                 base (c16,c16s2,c32,c32s2,d0.5,f10)";
    assignment_curves(&path, title, &[("base".to_string(), training_run(0.0))]).unwrap();
    let image = open(&path);
    let inked = |x: u32| (0..40).any(|y| image.get_pixel(x, y).0 != [255, 255, 255]);
    let columns: Vec<u32> = (0..image.width()).filter(|&x| inked(x)).collect();
    let (first, last) = (columns[0], *columns.last().unwrap());
    assert!(first >= 4 && last + 4 < image.width(), "the title runs from x = {first} to {last} of {}", image.width());
    assert!(last - first > image.width() / 2, "the title shrank to {} pixels", last - first);
}
